//! The unit texts. Plain functions, compiled on every platform, so the launchd plist
//! is checked on Linux too.
//!
//! Quoting rules followed (systemd.syntax(7), systemd.exec(5), systemd.service(5)):
//! * every setting undergoes specifier expansion, so `%` is written `%%`;
//! * `ExecStart=` arguments undergo `$VAR` expansion, so `$` is written `$$` there —
//!   except the executable path, which systemd uses verbatim;
//! * a word with whitespace, quotes, `\` or `;` is double-quoted, and inside the
//!   quotes `\` and `"` are backslash-escaped (C-style unescaping applies);
//! * `Environment=` does no `$` expansion, so `$` stays as is there;
//! * systemd refuses an executable path containing `"`, `'` or `\` outright, so such a
//!   binary path is an error here rather than a unit that will not load.
//!
//! In the plist, `& < > " '` are escaped as XML entities.

use std::path::{Component, Path, PathBuf};

use super::{LAUNCHD_LABEL, LAUNCHD_LOG_FILE, ServiceOptions};
use crate::error::{Error, Result};

/// The arguments after the binary, in both units: foreground `serve`, no token (the
/// daemon makes its own; DESIGN §3).
const SERVE_ARGS: [&str; 1] = ["serve"];

/// The systemd user unit for `opts` (`r1.service`). Fails on a relative, non-UTF-8
/// or control-character path, and on a binary path systemd cannot execute (`"`, `'`,
/// `\`). Contains no secret.
pub fn render_systemd_unit(opts: &ServiceOptions) -> Result<String> {
    let binary = checked_path("r1 binary", &opts.r1_binary)?;
    if binary.contains(['"', '\'', '\\']) {
        return Err(Error::invalid_params(format!(
            "the r1 binary path {binary} contains a quote or backslash, which systemd refuses in ExecStart=; install r1 at a path without them"
        )));
    }
    let home = checked_path("r1 home", &opts.home)?;
    let mut exec_start = systemd_word(&binary, Dollar::Verbatim);
    for arg in SERVE_ARGS {
        exec_start.push(' ');
        exec_start.push_str(&systemd_word(arg, Dollar::Escape));
    }
    let environment = systemd_word(&format!("R1_HOME={home}"), Dollar::Verbatim);
    Ok(format!(
        "\
# Written by `r1 serve --install`; remove it with `r1 serve --uninstall`.
# It holds no secret: the daemon makes a fresh token at each start.
[Unit]
Description=r1 per-user session daemon

[Service]
Type=simple
ExecStart={exec_start}
Environment={environment}
Restart=on-failure
RestartSec=5
# Exit status 1 means another r1 daemon holds the lock: restarting cannot help.
RestartPreventExitStatus=1

[Install]
WantedBy=default.target
"
    ))
}

/// The launchd agent for `opts` (`dev.relayone.r1.plist`): `ProgramArguments` =
/// `[<r1>, "serve"]`, `R1_HOME` in `EnvironmentVariables`, started at load, restarted
/// unless it exits 0 (`KeepAlive = {SuccessfulExit = false}`), stdout and stderr to
/// `<home>/log/launchd.log`. Contains no secret.
pub fn render_launchd_plist(opts: &ServiceOptions) -> Result<String> {
    let binary = checked_path("r1 binary", &opts.r1_binary)?;
    let home = checked_path("r1 home", &opts.home)?;
    let log = checked_path("r1 log file", &opts.log_dir().join(LAUNCHD_LOG_FILE))?;
    let label = xml_escape(LAUNCHD_LABEL);
    let binary = xml_escape(&binary);
    let home = xml_escape(&home);
    let log = xml_escape(&log);
    let args: String = SERVE_ARGS
        .iter()
        .map(|a| format!("\t\t<string>{}</string>\n", xml_escape(a)))
        .collect();
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by r1 (serve, install). It holds no secret: the daemon makes a fresh token at each start. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{label}</string>
	<key>ProgramArguments</key>
	<array>
		<string>{binary}</string>
{args}	</array>
	<key>EnvironmentVariables</key>
	<dict>
		<key>R1_HOME</key>
		<string>{home}</string>
	</dict>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardOutPath</key>
	<string>{log}</string>
	<key>StandardErrorPath</key>
	<string>{log}</string>
</dict>
</plist>
"#
    ))
}

/// Whether `$` must be doubled in a systemd word.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dollar {
    /// `ExecStart=` arguments after the executable: `$` → `$$`.
    Escape,
    /// The executable path and `Environment=`: `$` is literal.
    Verbatim,
}

/// One word of a systemd setting, quoted only when it must be (so common paths stay
/// readable), with `%` doubled always and `$` doubled where `dollar` says.
fn systemd_word(s: &str, dollar: Dollar) -> String {
    let quote = s.is_empty()
        || s.chars()
            .any(|c| matches!(c, ' ' | '\t' | '"' | '\'' | '\\' | ';'));
    let mut out = String::with_capacity(s.len() + 2);
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if dollar == Dollar::Escape => out.push_str("$$"),
            // Only reachable inside quotes: both chars force quoting above.
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
    out
}

/// Escapes the five XML special characters.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// The path as a normalised UTF-8 string (`//` and `.` dropped, no trailing `/`),
/// refusing what no unit can carry: relative paths, `..` (resolving it needs the file
/// system; symlinks make it ambiguous), non-UTF-8, and control characters (neither a
/// unit line nor XML 1.0 can hold them).
fn checked_path(what: &str, path: &Path) -> Result<String> {
    if !path.is_absolute() {
        return Err(Error::invalid_params(format!(
            "the {what} path {} is not absolute; pass an absolute path",
            path.display()
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid_params(format!(
            "the {what} path {} contains `..`; pass a canonical path",
            path.display()
        )));
    }
    let normal: PathBuf = path.components().collect();
    let Some(s) = normal.to_str() else {
        return Err(Error::invalid_params(format!(
            "the {what} path {} is not valid UTF-8, which a unit file cannot hold; use a UTF-8 path",
            path.display()
        )));
    };
    if s.chars()
        .any(|c| c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
    {
        return Err(Error::invalid_params(format!(
            // Debug-quoted: the message must stay one line.
            "the {what} path {:?} contains a control character, which a unit file cannot hold; use another path",
            path.as_os_str()
        )));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(systemd_word("/usr/bin/r1", Dollar::Escape), "/usr/bin/r1");
        assert_eq!(systemd_word("/a b", Dollar::Escape), "\"/a b\"");
        assert_eq!(systemd_word("/a%b$c", Dollar::Escape), "/a%%b$$c");
        assert_eq!(systemd_word("/a%b$c", Dollar::Verbatim), "/a%%b$c");
        assert_eq!(
            systemd_word("R1_HOME=/a \"q\" \\", Dollar::Verbatim),
            "\"R1_HOME=/a \\\"q\\\" \\\\\""
        );
        assert_eq!(systemd_word("", Dollar::Escape), "\"\"");
    }

    #[test]
    fn xml_escapes_all_five() {
        assert_eq!(
            xml_escape("a&b<c>d\"e'f"),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f"
        );
    }

    #[test]
    fn paths_are_checked_and_normalised() {
        assert_eq!(
            checked_path("x", Path::new("/a//b/./c/")).unwrap(),
            "/a/b/c"
        );
        assert!(checked_path("x", Path::new("rel")).is_err());
        assert!(checked_path("x", Path::new("/a/../b")).is_err());
        assert!(checked_path("x", Path::new("/a\nb")).is_err());
    }
}
