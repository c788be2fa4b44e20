//! A public key blob's wire format per key type, checked as sshd decodes it (OpenSSH sshkey.c
//! `sshkey_from_blob`, ssh-ed25519.c, ssh-ecdsa.c, ssh-rsa.c, ssh-*-sk.c; RFC 4253 6.6, RFC 5656
//! 3.1, PROTOCOL.u2f). EC points get the checks of OpenSSH 9.2 (on the curve, coordinates in
//! range), which are stricter than current OpenSSH's. No I/O.

use num_bigint::BigUint;

/// Why a blob is not a key sshd would load. Never holds the key's bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BlobError {
    #[error("ends early: the key was cut short (copy the whole .pub line again)")]
    Short,
    #[error("has {0} bytes after the end of the key")]
    Trailing(usize),
    #[error("holds a string with a NUL byte inside")]
    Nul,
    #[error("holds a {got}-byte key where {kind} needs {want}")]
    Length {
        kind: &'static str,
        got: usize,
        want: usize,
    },
    #[error("names curve {0:?}, not the one its type says")]
    Curve(String),
    #[error("holds an EC point that is not in uncompressed (0x04) form")]
    Compressed,
    #[error("holds an EC point that is not a valid public key on its curve")]
    BadPoint,
    #[error("holds a negative or oversized RSA number")]
    BadNumber,
    #[error("holds a {0}-bit RSA modulus; sshd refuses RSA keys under 1024 bits")]
    SmallRsa(u64),
}

/// sshkey.h SSH_RSA_MINIMUM_MODULUS_SIZE.
const RSA_MIN_BITS: u64 = 1024;
/// sshbuf.h SSHBUF_MAX_BIGNUM (bytes).
const MAX_BIGNUM: usize = 16384 / 8;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], BlobError> {
        let len = self.0.get(..4).ok_or(BlobError::Short)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let body = self.0.get(4..4 + len).ok_or(BlobError::Short)?;
        self.0 = &self.0[4 + len..];
        Ok(body)
    }

    /// sshbuf_get_cstring: a NUL is allowed only as the last byte, and then dropped.
    fn cstring(&mut self) -> Result<&'a [u8], BlobError> {
        let s = self.string()?;
        match s.iter().position(|&b| b == 0) {
            Some(i) if i + 1 == s.len() => Ok(&s[..i]),
            Some(_) => Err(BlobError::Nul),
            None => Ok(s),
        }
    }

    /// sshbuf_get_bignum2_bytes_direct: non-negative, at most 16384 bits, leading zeros trimmed.
    fn mpint(&mut self) -> Result<&'a [u8], BlobError> {
        let d = self.string()?;
        let negative = d.first().is_some_and(|b| b & 0x80 != 0);
        let oversized = d.len() > MAX_BIGNUM + 1 || (d.len() == MAX_BIGNUM + 1 && d[0] != 0);
        if negative || oversized {
            return Err(BlobError::BadNumber);
        }
        let zeros = d.iter().take_while(|&&b| b == 0).count();
        Ok(&d[zeros..])
    }
}

/// The type name a blob starts with, if it is readable.
pub(crate) fn embedded_type(raw: &[u8]) -> Option<String> {
    let name = Reader(raw).cstring().ok()?;
    String::from_utf8(name.to_vec()).ok()
}

/// Check `raw` as a public key of type `kind` (its leading type name already compared) and return
/// what identifies the key for sshd's `sshkey_equal`: its parts, each length-prefixed, with RSA's
/// numbers without leading zeros.
pub(crate) fn decode(kind: &str, raw: &[u8]) -> Result<Vec<u8>, BlobError> {
    let mut r = Reader(raw);
    r.cstring()?;
    let mut id = Vec::new();
    let mut push = |part: &[u8]| {
        id.extend_from_slice(&(part.len() as u32).to_be_bytes());
        id.extend_from_slice(part);
    };
    match kind {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            let pk = r.string()?;
            if pk.len() != 32 {
                return Err(BlobError::Length {
                    kind: "ssh-ed25519",
                    got: pk.len(),
                    want: 32,
                });
            }
            push(pk);
        }
        "ssh-rsa" => {
            let e = r.mpint()?;
            let n = r.mpint()?;
            let bits = bits(n);
            if bits < RSA_MIN_BITS {
                return Err(BlobError::SmallRsa(bits));
            }
            push(e);
            push(n);
        }
        _ => {
            let curve = Curve::for_kind(kind).ok_or(BlobError::BadPoint)?;
            let name = r.cstring()?;
            if name != curve.name.as_bytes() {
                return Err(BlobError::Curve(String::from_utf8_lossy(name).into()));
            }
            let point = r.string()?;
            curve.check(point)?;
            push(point);
        }
    }
    if kind.starts_with("sk-") {
        push(r.cstring()?);
    }
    match r.0.len() {
        0 => Ok(id),
        n => Err(BlobError::Trailing(n)),
    }
}

fn bits(n: &[u8]) -> u64 {
    match n.first() {
        None => 0,
        Some(b) => (n.len() as u64 - 1) * 8 + u64::from(8 - b.leading_zeros()),
    }
}

/// A NIST prime curve y^2 = x^3 - 3x + b over p, with the group order n (SEC 2).
struct Curve {
    name: &'static str,
    bytes: usize,
    p: &'static str,
    b: &'static str,
    n: &'static str,
}

impl Curve {
    fn for_kind(kind: &str) -> Option<Curve> {
        let c = match kind {
            "ecdsa-sha2-nistp256" | "sk-ecdsa-sha2-nistp256@openssh.com" => Curve {
                name: "nistp256",
                bytes: 32,
                p: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
                b: "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
                n: "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
            },
            "ecdsa-sha2-nistp384" => Curve {
                name: "nistp384",
                bytes: 48,
                p: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
                b: "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
                n: "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
            },
            "ecdsa-sha2-nistp521" => Curve {
                name: "nistp521",
                bytes: 66,
                p: "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                b: "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
                n: "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
            },
            _ => return None,
        };
        Some(c)
    }

    /// sshbuf_get_eckey + EC_POINT_oct2point + OpenSSH 9.2's sshkey_ec_validate_public.
    fn check(&self, point: &[u8]) -> Result<(), BlobError> {
        match point.first() {
            None => return Err(BlobError::BadPoint),
            Some(4) => {}
            Some(_) => return Err(BlobError::Compressed),
        }
        if point.len() != 1 + 2 * self.bytes {
            return Err(BlobError::BadPoint);
        }
        let hex = |s: &str| BigUint::parse_bytes(s.as_bytes(), 16).expect("curve constant");
        let (p, b, n) = (hex(self.p), hex(self.b), hex(self.n));
        let x = BigUint::from_bytes_be(&point[1..1 + self.bytes]);
        let y = BigUint::from_bytes_be(&point[1 + self.bytes..]);
        if x >= p || y >= p {
            return Err(BlobError::BadPoint);
        }
        let on_curve = (&y * &y) % &p == (&x * &x * &x + &b + &p * 3u32 - &x * 3u32) % &p;
        let half = n.bits() / 2;
        let one = BigUint::from(1u32);
        let in_range = |v: &BigUint| v.bits() > half && *v < &n - &one;
        if on_curve && in_range(&x) && in_range(&y) {
            Ok(())
        } else {
            Err(BlobError::BadPoint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn raw(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi";
    const P256: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFS8bdF300Nssk9DrEKgRhdrsMkijqQK1okArGtoNFV4CW90xGK54I5aAzOwsQ4JJh1qHKDSvfuvKJdqkoK5rgA=";

    #[test]
    fn blobs_as_sshd_decodes_them() {
        let ed = raw(ED);
        assert!(decode("ssh-ed25519", &ed).is_ok());
        assert_eq!(decode("ssh-ed25519", &ed[..40]), Err(BlobError::Short));
        let mut long = ed.clone();
        long.push(0);
        assert_eq!(decode("ssh-ed25519", &long), Err(BlobError::Trailing(1)));
        let mut bad_len = ed.clone();
        bad_len[18] = 31;
        assert!(decode("ssh-ed25519", &bad_len).is_err());
        let p = raw(P256);
        assert!(decode("ecdsa-sha2-nistp256", &p).is_ok());
        let mut off = p.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert_eq!(
            decode("ecdsa-sha2-nistp256", &off),
            Err(BlobError::BadPoint)
        );
        let mut compressed = p.clone();
        compressed[39] = 2;
        assert_eq!(
            decode("ecdsa-sha2-nistp256", &compressed),
            Err(BlobError::Compressed)
        );
        let mut curve = p.clone();
        curve[34] = b'3';
        assert!(matches!(
            decode("ecdsa-sha2-nistp256", &curve),
            Err(BlobError::Curve(_))
        ));
        assert_eq!(
            decode("sk-ssh-ed25519@openssh.com", &ed),
            Err(BlobError::Short),
            "an sk key needs its application string"
        );
    }

    #[test]
    fn rsa_numbers() {
        let mpint = |v: &[u8]| [&(v.len() as u32).to_be_bytes()[..], v].concat();
        let blob = |n: &[u8]| [mpint(b"ssh-rsa"), mpint(&[1, 0, 1]), mpint(n)].concat();
        let mut n1024 = vec![0u8; 129];
        n1024[1] = 0x80;
        assert!(decode("ssh-rsa", &blob(&n1024)).is_ok());
        assert_eq!(
            decode("ssh-rsa", &blob(&[0x40; 127])),
            Err(BlobError::SmallRsa(1015))
        );
        assert_eq!(
            decode("ssh-rsa", &blob(&n1024[1..])),
            Err(BlobError::BadNumber),
            "a set top bit is a negative mpint"
        );
        assert_eq!(bits(&[0x01, 0]), 9);
    }
}
