//! Container images without Docker: one uncompressed layer, written as an OCI image layout inside a tar
//! archive that `ctr images import`, `docker load` and `kind load image-archive` all read.
//!
//! ```text
//! <name>.tar
//! ├── oci-layout                      {"imageLayoutVersion":"1.0.0"}
//! ├── index.json                      → manifest (annotated with the image name)
//! ├── manifest.json                   the same image for `docker load` (RepoTags)
//! └── blobs/sha256/<digest>           layer tar (mtime 0, uid 0), config JSON, manifest JSON
//! ```
//!
//! Everything is deterministic: the same files give the same digests, so an unchanged image is not
//! imported twice.
//!
//! `cargo xtask image` packs the release `ksiam` binary (static, `+crt-static`) this way: scratch base, the
//! binary at `/ksiam`, user 65532, CA roots for `https` clients. `deploy/Dockerfile` builds the same image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::process::{self, run, run_inherit};
use crate::progress::{Step, say};

/// One entry of an image's only layer.
pub enum Entry {
    Dir { path: String },
    File { path: String, mode: u32, data: Vec<u8> },
}

/// An image: one layer on scratch, its entrypoint and user.
pub struct Image {
    /// The full reference, e.g. `localhost/ksiam:0.1.0` (a bare name would be read as `docker.io/library/...`).
    pub name: String,
    pub entrypoint: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    pub env: Vec<String>,
    pub entries: Vec<Entry>,
}

/// What [`write_archive`] wrote.
pub struct Written {
    pub path: PathBuf,
    /// `sha256:<hex>` of the manifest (what `ctr images ls` shows as the image's digest).
    pub manifest_digest: String,
    /// Bytes of the (uncompressed) layer.
    pub layer_size: usize,
}

/// Writes `image` as an OCI layout in a tar archive at `out`.
pub fn write_archive(image: &Image, out: &Path) -> anyhow::Result<Written> {
    let mut layer = TarWriter::default();
    for entry in &image.entries {
        match entry {
            // `/tmp` is world-writable with the sticky bit, as everywhere.
            Entry::Dir { path } if path.trim_matches('/') == "tmp" => layer.dir(path, 0o1777)?,
            Entry::Dir { path } => layer.dir(path, 0o755)?,
            Entry::File { path, mode, data } => layer.file(path, *mode, data)?,
        }
    }
    let layer = layer.finish();
    let layer_digest = sha256(&layer);

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": image.user,
            "Entrypoint": image.entrypoint,
            "Env": image.env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "cargo xtask (ksiam)"}],
    }))?;
    let config_digest = sha256(&config);

    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = sha256(&manifest);
    let tag = image
        .name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": blob(&config_digest),
        "RepoTags": [image.name],
        "Layers": [blob(&layer_digest)],
    }]))?;

    let mut archive = TarWriter::default();
    archive.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    archive.dir("blobs", 0o755)?;
    archive.dir("blobs/sha256", 0o755)?;
    archive.file(&blob(&layer_digest), 0o644, &layer)?;
    archive.file(&blob(&config_digest), 0o644, &config)?;
    archive.file(&blob(&manifest_digest), 0o644, &manifest)?;
    archive.file("index.json", 0o644, &index)?;
    archive.file("manifest.json", 0o644, &docker_manifest)?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("partial");
    fs::write(&tmp, archive.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out)?;
    Ok(Written {
        path: out.to_owned(),
        manifest_digest,
        layer_size: layer.len(),
    })
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A minimal ustar writer: directories and regular files, owner 0:0, mtime 0.
#[derive(Default)]
pub struct TarWriter {
    buf: Vec<u8>,
}

// === impl TarWriter ===

impl TarWriter {
    pub fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        self.header(&format!("{}/", path.trim_end_matches('/')), mode, 0, b'5')
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.header(path, mode, data.len(), b'0')?;
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// The archive with its two terminating zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0; 1024]);
        self.buf
    }

    fn header(&mut self, path: &str, mode: u32, size: usize, kind: u8) -> anyhow::Result<()> {
        let path = path.trim_start_matches('/');
        // Paths longer than 100 bytes go into the ustar prefix field, split at a `/`.
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            let split = path[..path.len().min(156)]
                .rfind('/')
                .filter(|&i| path.len() - i - 1 <= 100)
                .with_context(|| format!("tar path too long: {path}"))?;
            (&path[..split], &path[split + 1..])
        };
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size as u64);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let sum = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(sum.as_bytes());
        self.buf.extend_from_slice(&h);
        Ok(())
    }

    fn pad(&mut self) {
        let rem = self.buf.len() % 512;
        if rem != 0 {
            self.buf.resize(self.buf.len() + 512 - rem, 0);
        }
    }
}

/// Writes `value` as zero-padded octal digits followed by a NUL.
fn octal(field: &mut [u8], value: u64) {
    let n = field.len() - 1;
    let digits = format!("{value:0n$o}");
    field[..n].copy_from_slice(digits.as_bytes());
    field[n] = 0;
}

/// The user the ksiam image runs as (distroless' "nonroot").
pub const KSIAM_UID: u32 = 65532;

/// `localhost/ksiam:<workspace version>`: what the chart's default values and the node reference.
pub fn ksiam_image_name(root: &Path) -> anyhow::Result<String> {
    Ok(format!("localhost/ksiam:{}", workspace_version(root)?))
}

/// `version` of `[workspace.package]` in the root `Cargo.toml` (the chart's `appVersion`).
pub fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            return Ok(v
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"')
                .to_owned());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// `cargo xtask image [--no-import]`: builds the static release binary, packs it and (unless told not to, or
/// no node runs) imports it into the node's containerd.
pub fn run_cli(root: &Path, import: bool) -> anyhow::Result<()> {
    let written = build_ksiam_image(root)?;
    println!(
        "{}: {} (layer {:.1} MiB, manifest {})",
        ksiam_image_name(root)?,
        written.path.display(),
        written.layer_size as f64 / (1024.0 * 1024.0),
        written.manifest_digest
    );
    if import {
        if crate::node::containerd_running() {
            crate::node::import_image(&written.path)?;
        } else {
            say("no node is running: not imported (start one with `cargo xtask up --node`)");
        }
    }
    Ok(())
}

/// The static release `ksiam` binary: `cargo build --release --target x86_64-unknown-linux-gnu` with
/// `-C target-feature=+crt-static`, in its own target sub-directory (other RUSTFLAGS than the host build).
pub fn build_static_ksiam(root: &Path) -> anyhow::Result<PathBuf> {
    build_static(root, &["-p", "ksiam", "--bin", "ksiam"], "ksiam")
}

/// Builds `args` statically (release, gnu target, `+crt-static`) and returns `<target>/.../release/<artifact>`.
pub fn build_static(root: &Path, args: &[&str], artifact: &str) -> anyhow::Result<PathBuf> {
    let step = Step::start(format!("static release build of {artifact}"));
    let target_dir = crate::stack::cargo_target_dir(root).join("static");
    let mut cmd = crate::stack::cargo_command();
    cmd.current_dir(root)
        .args(["build", "--release", "--target", TARGET])
        .args(args)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    run_inherit(&mut cmd)?;
    step.done();
    let dir = target_dir.join(TARGET).join("release");
    let bin = if args.contains(&"--example") {
        dir.join("examples").join(artifact)
    } else {
        dir.join(artifact)
    };
    let file = run(Command::new("file").arg("-b").arg(&bin)).unwrap_or_default();
    if !file.is_empty() && file.contains("dynamically linked") {
        bail!("{} is not static: {file}", bin.display());
    }
    Ok(bin)
}

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the ksiam image archive into `target/images/ksiam.tar`.
///
/// `KSIAM_IMAGE_BIN=<path>` packs that binary instead of the static release build (a development shortcut:
/// a dynamically linked binary gets the shared libraries `ldd` names in the layer).
pub fn build_ksiam_image(root: &Path) -> anyhow::Result<Written> {
    let built = match std::env::var_os("KSIAM_IMAGE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_static_ksiam(root)?,
    };
    ksiam_image_from(root, &built)
}

/// Where the images' programs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// The static release builds (`+crt-static`): what `cargo xtask image` ships.
    StaticRelease,
    /// The debug builds the e2e suite compiled anyway, with their shared libraries in the layer: no extra Rust
    /// build (`cargo xtask test` uses these to stay inside CI's time).
    Debug,
}

/// The ksiam and SDK-example image archives from `programs`.
pub fn test_images(root: &Path, programs: Programs) -> anyhow::Result<(Written, Written)> {
    match programs {
        Programs::StaticRelease => Ok((build_ksiam_image(root)?, build_sdk_example_image(root)?)),
        Programs::Debug => {
            let step = Step::start(
                "cargo build -p ksiam --bin ksiam; cargo build -p kubesphere-client --example list_clusters",
            );
            for args in [
                &["build", "-p", "ksiam", "--bin", "ksiam"][..],
                &["build", "-p", "kubesphere-client", "--example", "list_clusters"][..],
            ] {
                process::run_inherit(crate::stack::cargo_command().current_dir(root).args(args))?;
            }
            step.done();
            let debug = crate::stack::cargo_target_dir(root).join("debug");
            Ok((
                ksiam_image_from(root, &debug.join("ksiam"))?,
                sdk_example_image_from(root, &debug.join("examples").join("list_clusters"))?,
            ))
        }
    }
}

/// Packs `built` (stripped) as the ksiam image into `target/images/ksiam.tar`.
pub fn ksiam_image_from(root: &Path, built: &Path) -> anyhow::Result<Written> {
    // The symbol table is a quarter of the binary (39.9 → 30.1 MB); backtraces of a release build name no
    // source lines either way.
    let bin = images_dir(root).join("ksiam.stripped");
    fs::create_dir_all(images_dir(root))?;
    fs::copy(built, &bin).with_context(|| format!("copying {}", built.display()))?;
    run(Command::new("strip").arg(&bin))?;
    let name = ksiam_image_name(root)?;
    let step = Step::start(format!("image {name}"));
    let image = Image {
        name,
        entrypoint: vec!["/ksiam".into()],
        user: format!("{KSIAM_UID}:{KSIAM_UID}"),
        env: vec![],
        entries: static_program_entries("/ksiam", &bin)?,
    };
    let written = write_archive(&image, &images_dir(root).join("ksiam.tar"))?;
    step.done();
    Ok(written)
}

/// The SDK's `list_clusters` example (seed §1.3 in Rust) as an image, for a Pod that uses nothing but its
/// in-cluster configuration.
pub const SDK_EXAMPLE_IMAGE: &str = "localhost/ksiam/list-clusters:dev";

/// Builds the static `list_clusters` example and packs it into `target/images/list-clusters.tar`.
/// `KSIAM_SDK_IMAGE_BIN=<path>` packs that binary instead (see [`build_ksiam_image`]).
pub fn build_sdk_example_image(root: &Path) -> anyhow::Result<Written> {
    let bin = match std::env::var_os("KSIAM_SDK_IMAGE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_static(
            root,
            &["-p", "kubesphere-client", "--example", "list_clusters"],
            "list_clusters",
        )?,
    };
    sdk_example_image_from(root, &bin)
}

/// Packs `bin` as the SDK example's image into `target/images/list-clusters.tar`.
pub fn sdk_example_image_from(root: &Path, bin: &Path) -> anyhow::Result<Written> {
    let image = Image {
        name: SDK_EXAMPLE_IMAGE.into(),
        entrypoint: vec!["/list_clusters".into()],
        user: format!("{KSIAM_UID}:{KSIAM_UID}"),
        env: vec![],
        entries: static_program_entries("/list_clusters", bin)?,
    };
    write_archive(&image, &images_dir(root).join("list-clusters.tar"))
}

/// The entries of a scratch image holding one static program: the program, `/etc/passwd`/`group` naming
/// the non-root user, `/tmp`, and the host's CA roots (for `https` clients outside the cluster).
pub fn static_program_entries(path_in_image: &str, bin: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut entries = vec![
        Entry::Dir { path: "etc".into() },
        Entry::File {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: format!(
                "root:x:0:0:root:/:/sbin/nologin\nnonroot:x:{KSIAM_UID}:{KSIAM_UID}:nonroot:/:/sbin/nologin\n"
            )
            .into_bytes(),
        },
        Entry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: format!("root:x:0:\nnonroot:x:{KSIAM_UID}:\n").into_bytes(),
        },
        Entry::Dir { path: "tmp".into() },
    ];
    let roots = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if roots.is_file() {
        entries.push(Entry::Dir {
            path: "etc/ssl".into(),
        });
        entries.push(Entry::Dir {
            path: "etc/ssl/certs".into(),
        });
        entries.push(Entry::File {
            path: "etc/ssl/certs/ca-certificates.crt".into(),
            mode: 0o644,
            data: fs::read(roots)?,
        });
    }
    entries.extend(shared_libraries(bin)?);
    entries.push(Entry::File {
        path: path_in_image.trim_start_matches('/').into(),
        mode: 0o755,
        data: fs::read(bin).with_context(|| format!("reading {}", bin.display()))?,
    });
    Ok(entries)
}

/// The shared libraries a dynamically linked program loads (none for a static one), at their paths.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<Entry>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = line
            .split_once("=>")
            .map_or(line, |(_, to)| to)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if !path.starts_with('/') {
            continue;
        }
        let path = Path::new(path);
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
            dirs.insert(d.to_owned());
            dir = d.parent();
        }
        entries.push(Entry::File {
            path: path.display().to_string().trim_start_matches('/').to_owned(),
            mode: 0o755,
            data: fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        });
    }
    let mut all: Vec<Entry> = dirs
        .into_iter()
        .map(|d| Entry::Dir {
            path: d.display().to_string().trim_start_matches('/').to_owned(),
        })
        .collect();
    all.extend(entries);
    Ok(all)
}

/// `target/images/`.
pub fn images_dir(root: &Path) -> PathBuf {
    root.join("target").join("images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_carry_a_valid_checksum_and_padding() {
        let mut tar = TarWriter::default();
        tar.file("a/b.txt", 0o644, b"hello").unwrap();
        let out = tar.finish();
        assert_eq!(out.len(), 512 + 512 + 1024);
        let h = &out[..512];
        assert_eq!(&h[..7], b"a/b.txt");
        assert_eq!(&h[124..135], b"00000000005");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h.to_vec();
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&out[512..517], b"hello");
        assert!(out[517..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_paths_use_the_ustar_prefix() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(20));
        let mut tar = TarWriter::default();
        tar.file(&long, 0o644, b"").unwrap();
        let h = tar.finish();
        assert_eq!(&h[..20], "f".repeat(20).as_bytes());
        assert_eq!(&h[345..465], "d".repeat(120).as_bytes());
    }

    #[test]
    fn the_archive_is_deterministic_and_names_the_image() {
        let image = Image {
            name: "localhost/test:1".into(),
            entrypoint: vec!["/x".into()],
            user: "1:1".into(),
            env: vec![],
            entries: vec![Entry::File {
                path: "x".into(),
                mode: 0o755,
                data: b"#!".to_vec(),
            }],
        };
        let dir = std::env::temp_dir().join(format!("ksiam-image-test-{}", std::process::id()));
        let a = write_archive(&image, &dir.join("a.tar")).unwrap();
        let b = write_archive(&image, &dir.join("b.tar")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let bytes = fs::read(&a.path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#""io.containerd.image.name":"localhost/test:1""#));
        assert!(text.contains(r#""RepoTags":["localhost/test:1"]"#));
        fs::remove_dir_all(dir).unwrap();
    }
}
