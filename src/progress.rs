//! A progress line for people waiting on a terminal: one line on stderr rewritten in place with
//! a carriage return while a long command or a download runs, then cleared. Only when stderr is
//! a terminal: in a pipe, a file or the journal nothing is written. Plain text, no escape codes,
//! so it needs no NO_COLOR exception (the way cargo and apt draw theirs, minus the colour).

use std::io::{self, IsTerminal as _, Write};
use std::time::{Duration, Instant};

/// Longest line drawn: a line that wraps cannot be rewritten by `\r`, and terminal width is not
/// asked for (80 columns is the narrowest terminal anyone runs brickup in).
const MAX_WIDTH: usize = 78;

/// When a redraw is due: not before `delay` (quick work shows nothing), then at most once per
/// `every`.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    delay: Duration,
    every: Duration,
    last: Option<Duration>,
}

impl Throttle {
    pub(crate) fn new(delay: Duration, every: Duration) -> Self {
        Throttle {
            delay,
            every,
            last: None,
        }
    }

    /// True when a line should be drawn at `elapsed` since the work started; records it.
    pub(crate) fn due(&mut self, elapsed: Duration) -> bool {
        let due = match self.last {
            None => elapsed >= self.delay,
            Some(last) => elapsed >= last + self.every,
        };
        if due {
            self.last = Some(elapsed);
        }
        due
    }
}

/// One progress line on `W` (stderr in brickup). Dropping it clears what it drew.
pub(crate) struct Line<W: Write = io::Stderr> {
    /// `None` when there is no terminal, or after a write failed.
    out: Option<W>,
    start: Instant,
    throttle: Throttle,
    /// Characters of the last text drawn (the padding after it is blank already), to blank them
    /// when the next text is shorter or at the end.
    drawn: usize,
}

impl Line {
    /// A line on stderr if stderr is a terminal; otherwise one that never writes.
    pub(crate) fn on_stderr(throttle: Throttle) -> Self {
        let out = io::stderr().is_terminal().then(io::stderr);
        Line::to(out, throttle)
    }
}

impl<W: Write> Line<W> {
    pub(crate) fn to(out: Option<W>, throttle: Throttle) -> Self {
        Line {
            out,
            start: Instant::now(),
            throttle,
            drawn: 0,
        }
    }

    /// Redraw with `text(elapsed)` if the throttle says so; `text` is only called then.
    pub(crate) fn update(&mut self, text: impl FnOnce(Duration) -> String) {
        self.update_at(self.start.elapsed(), text);
    }

    fn update_at(&mut self, elapsed: Duration, text: impl FnOnce(Duration) -> String) {
        if self.out.is_none() || !self.throttle.due(elapsed) {
            return;
        }
        let text = fit(&text(elapsed));
        let len = text.chars().count();
        let pad = self.drawn.saturating_sub(len);
        self.write(&format!("\r{text}{:pad$}", ""));
        self.drawn = len;
    }

    /// Blanks the line (if one was drawn) and leaves the cursor at its start for the next log.
    pub(crate) fn finish(&mut self) {
        if self.drawn > 0 {
            let blank = format!("\r{:w$}\r", "", w = self.drawn);
            self.write(&blank);
            self.drawn = 0;
        }
    }

    fn write(&mut self, s: &str) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        // A terminal that went away must not fail the install it was watching: stop drawing.
        if out
            .write_all(s.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            self.out = None;
        }
    }
}

impl<W: Write> Drop for Line<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `text` cut to [`MAX_WIDTH`] characters, ending in `...` when cut.
fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_WIDTH {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_WIDTH - 3).collect();
    cut.push_str("...");
    cut
}

/// A byte count for people: `512 B`, `12.3 KiB`, `4.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The line for a transfer: `  downloading: 1.2 MiB of 3.4 MiB (2 s)`, the total when known.
pub(crate) fn transfer(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let of = total
        .map(|t| format!(" of {}", bytes(t)))
        .unwrap_or_default();
    format!(
        "  downloading: {}{of} ({} s)",
        bytes(done),
        elapsed.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn throttle_waits_for_the_delay_then_draws_at_most_once_per_interval() {
        let mut t = Throttle::new(2000 * MS, 1000 * MS);
        let drawn: Vec<u32> = (0..=50)
            .map(|i| i * 100)
            .filter(|&ms| t.due(ms * MS))
            .collect();
        assert_eq!(drawn, vec![2000, 3000, 4000, 5000]);
        // Polled irregularly: never two draws closer than the interval.
        let mut t = Throttle::new(Duration::ZERO, 250 * MS);
        let drawn: Vec<u32> = [0, 10, 240, 260, 300, 520, 700, 780]
            .into_iter()
            .filter(|&ms| t.due(ms * MS))
            .collect();
        assert_eq!(drawn, vec![0, 260, 520, 780]);
    }

    #[test]
    fn a_line_is_rewritten_in_place_padded_and_blanked_at_the_end() {
        let mut line = Line::to(Some(Vec::new()), Throttle::new(Duration::ZERO, 1000 * MS));
        line.update_at(Duration::ZERO, |_| "  long text here".into());
        line.update_at(500 * MS, |_| panic!("throttled: the text is not even made"));
        line.update_at(1000 * MS, |e| format!("  short {}", e.as_secs()));
        line.finish();
        let out = String::from_utf8(line.out.take().unwrap()).unwrap();
        assert_eq!(
            out,
            format!(
                "\r  long text here\r  short 1{}\r{}\r",
                " ".repeat(7),
                " ".repeat(9)
            )
        );
    }

    #[test]
    fn without_a_terminal_nothing_is_drawn_and_nothing_is_formatted() {
        let mut line: Line<Vec<u8>> = Line::to(None, Throttle::new(Duration::ZERO, MS));
        line.update_at(Duration::from_secs(5), |_| panic!("no terminal: no text"));
        line.finish();
        assert_eq!(line.drawn, 0);
    }

    #[test]
    fn quick_work_draws_nothing_and_clears_nothing() {
        let mut line = Line::to(Some(Vec::new()), Throttle::new(2000 * MS, 1000 * MS));
        line.update_at(1999 * MS, |_| "never".into());
        line.finish();
        assert!(line.out.take().unwrap().is_empty());
    }

    #[test]
    fn long_lines_are_cut_to_fit_one_row() {
        let long = format!("  running {}", "x".repeat(200));
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), MAX_WIDTH);
        assert!(cut.ends_with("..."), "{cut}");
        assert_eq!(fit("  short"), "  short");
    }

    #[test]
    fn sizes_and_transfer_lines_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(12 * 1024 + 300), "12.3 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 / 2), "2.5 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(
            transfer(2048, Some(4096), Duration::from_millis(2500)),
            "  downloading: 2.0 KiB of 4.0 KiB (2 s)"
        );
        assert_eq!(
            transfer(10, None, Duration::ZERO),
            "  downloading: 10 B (0 s)"
        );
    }
}
