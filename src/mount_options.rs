//! The mount(8) conventions: `adlsfs <source> <mountpoint> -o opt[=value],...`, the form
//! `/sbin/mount.fuse3` runs for a `fuse.adlsfs` type (from the command line or fstab).
//! Arguments are rewritten into the ordinary `adlsfs mount ... --opt value` form before
//! clap sees them, so every flag is also an `-o` option (dashes become underscores).

use std::ffi::OsString;

/// Generic mount options that mean nothing more to adlsfs (it is always read-only,
/// nodev and nosuid) or that mount(8)/systemd consume themselves.
const IGNORED: [&str; 29] = [
    "ro",
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "sync",
    "async",
    "dirsync",
    "_netdev",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "defaults",
    "owner",
    "group",
    "nofail",
    "default_permissions",
];

/// Prefixes of options that belong to other programs.
const IGNORED_PREFIXES: [&str; 5] = ["x-", "comment=", "fsname=", "subtype=", "source="];

/// Rewrites `args` (program name first) from the mount(8) form into the subcommand form.
/// Arguments already in subcommand form only have their `-o` options expanded.
pub fn rewrite(args: Vec<OsString>, subcommands: &[&str]) -> Result<Vec<OsString>, String> {
    let mut args = args;
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let mount_form = !first.is_empty() && !first.starts_with('-') && !subcommands.contains(&first);
    if mount_form {
        args.insert(1, OsString::from("mount"));
    }
    if args.get(1).and_then(|a| a.to_str()) != Some("mount") {
        return Ok(args);
    }
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_str().unwrap_or_default().to_string();
        let options = if text == "-o" {
            iter.next()
                .ok_or("-o needs a comma-separated list of options")?
                .into_string()
                .map_err(|_| "mount options must be UTF-8".to_string())?
        } else if let Some(rest) = text
            .strip_prefix("-o")
            .filter(|r| !r.is_empty() && !text.starts_with("--"))
        {
            rest.to_string()
        } else {
            out.push(arg);
            continue;
        };
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            out.extend(flag_for(option));
        }
    }
    Ok(out)
}

/// The CLI arguments for one `-o` option (none for ignored generic options).
fn flag_for(option: &str) -> Vec<OsString> {
    if IGNORED.contains(&option) || IGNORED_PREFIXES.iter().any(|p| option.starts_with(p)) {
        return Vec::new();
    }
    match option.split_once('=') {
        Some((key, value)) => vec![
            OsString::from(format!("--{}", key.replace('_', "-"))),
            OsString::from(value),
        ],
        None => vec![OsString::from(format!("--{}", option.replace('_', "-")))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Vec<String> {
        rewrite(
            args.iter().map(OsString::from).collect(),
            &["mount", "ls", "prefetch"],
        )
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
    }

    #[test]
    fn mount_helper_form_becomes_the_mount_subcommand() {
        assert_eq!(
            rw(&["adlsfs", "adls://a/c", "/mnt/x", "-o", "rw,nosuid,nodev,allow_other,cache_dir=/var/cache/adlsfs,metadata_ttl=30s,_netdev,x-systemd.automount"]),
            ["adlsfs", "mount", "adls://a/c", "/mnt/x", "--allow-other", "--cache-dir", "/var/cache/adlsfs", "--metadata-ttl", "30s"]
        );
    }

    #[test]
    fn subcommand_form_expands_o_and_keeps_everything_else() {
        assert_eq!(
            rw(&[
                "adlsfs",
                "mount",
                "adls://a/c",
                "/m",
                "-ofetcher=native",
                "--foreground"
            ]),
            [
                "adlsfs",
                "mount",
                "adls://a/c",
                "/m",
                "--fetcher",
                "native",
                "--foreground"
            ]
        );
        assert_eq!(
            rw(&["adlsfs", "ls", "adls://a/c", "-o", "x"]),
            ["adlsfs", "ls", "adls://a/c", "-o", "x"]
        );
        assert_eq!(rw(&["adlsfs", "--help"]), ["adlsfs", "--help"]);
    }

    #[test]
    fn a_dangling_o_is_an_error() {
        assert!(rewrite(
            ["adlsfs", "mount", "-o"]
                .iter()
                .map(OsString::from)
                .collect(),
            &["mount"]
        )
        .is_err());
    }
}
