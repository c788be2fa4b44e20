# Packer template: bakes brickup into a custom image so first boot needs no download.
# It copies the pinned binary, the first-boot unit, optionally the config and a pre-verified csf
# tarball, then lets brickup stage what can be staged offline (packages, csf install, config
# files); the live steps (sshd restart, enabling the firewall) run at the image's first boot.
#
#   packer init image/brickup.pkr.hcl
#   packer build -var brickup_binary=target/x86_64-unknown-linux-musl/release/brickup \
#                -var config=brickup.yaml image/brickup.pkr.hcl
#
# The source below is QEMU on a Debian cloud image; swap it for your provider's builder
# (hcloud, digitalocean, amazon-ebs, ...): the provisioners stay the same.

packer {
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "brickup_binary" {
  type = string
}

variable "config" {
  type        = string
  default     = ""
  description = "brickup.yaml to bake in; leave empty to deliver it through user-data instead"
}

variable "csf_tarball" {
  type        = string
  default     = ""
  description = "csf tarball to pre-seed brickup's cache (/var/lib/brickup/cache/<sha256>.tgz)"
}

variable "csf_sha256" {
  type    = string
  default = ""
}

variable "base_image" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "base_image_checksum" {
  type        = string
  description = "sha512:... of base_image (pin it; never bake from an unverified image)"
}

source "qemu" "debian" {
  iso_url          = var.base_image
  iso_checksum     = var.base_image_checksum
  disk_image       = true
  format           = "qcow2"
  headless         = true
  ssh_username     = "debian"
  ssh_timeout      = "20m"
  shutdown_command = "sudo shutdown -P now"
}

build {
  sources = ["source.qemu.debian"]

  provisioner "file" {
    source      = var.brickup_binary
    destination = "/tmp/brickup"
  }

  provisioner "file" {
    source      = "image/brickup-firstboot.service"
    destination = "/tmp/brickup-firstboot.service"
  }

  # Keys and sshd before sshd first starts (no password SSH at first boot).
  provisioner "file" {
    source      = "image/brickup-early.service"
    destination = "/tmp/brickup-early.service"
  }

  provisioner "shell" {
    inline = [
      "sudo install -m 0755 /tmp/brickup /usr/local/bin/brickup",
      "sudo install -m 0644 /tmp/brickup-firstboot.service /etc/systemd/system/brickup-firstboot.service",
      "sudo systemctl enable brickup-firstboot.service",
      "sudo install -m 0644 /tmp/brickup-early.service /etc/systemd/system/brickup-early.service",
      "sudo systemctl enable brickup-early.service",
      "sudo install -d -m 0700 /etc/brickup /var/lib/brickup /var/lib/brickup/cache",
    ]
  }

  provisioner "file" {
    source      = var.config == "" ? "/dev/null" : var.config
    destination = "/tmp/brickup.yaml"
  }

  provisioner "file" {
    source      = var.csf_tarball == "" ? "/dev/null" : var.csf_tarball
    destination = "/tmp/csf.tgz"
  }

  provisioner "shell" {
    inline = [
      # The tarball is checked against the pin here as well as by brickup at first boot.
      "if [ -s /tmp/csf.tgz ]; then echo '${var.csf_sha256}  /tmp/csf.tgz' | sha256sum -c && sudo install -m 0600 /tmp/csf.tgz /var/lib/brickup/cache/${var.csf_sha256}.tgz; fi",
      "if [ -s /tmp/brickup.yaml ]; then sudo install -m 0600 /tmp/brickup.yaml /etc/brickup/brickup.yaml; fi",
      # Forget this build VM's identity so the image's first boot is a new instance.
      "sudo cloud-init clean --logs --machine-id",
    ]
  }
}
