//! The manual's command-line reference (`docs/src/reference/cli.md`),
//! rendered from the clap definitions themselves: every subcommand, every
//! argument with its help, default and environment variable.
//!
//! `tests/reference.rs` fails when the committed page differs from
//! [`markdown`]; `cargo xtask docs` (or `CONDUCTOR_BLESS=1 cargo test -p
//! conductor-cli --test reference`) writes it again.

use std::collections::BTreeSet;
use std::fmt::Write;

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::Cli;

/// Where the page lives, relative to the repository root.
pub const PATH: &str = "docs/src/reference/cli.md";

/// The whole command tree of `conductor` as Markdown.
pub fn markdown() -> String {
    let mut cli = Cli::command();
    // Propagates global arguments into the subcommands, as at run time.
    cli.build();
    let mut out = String::new();
    out.push_str("# Command-line reference\n\n");
    out.push_str(
        "<!-- Generated from the clap definitions in crates/cli by `cargo xtask docs`; \
         do not edit (crates/cli/tests/reference.rs fails when this page is stale). -->\n\n",
    );
    out.push_str(
        "Every subcommand of `conductor` with every flag, its default and the \
         environment variable it is read from (a flag given on the command line \
         wins over its variable). `conductor <command> --help` prints the same.\n\n",
    );
    render(&mut out, &cli, "conductor", &BTreeSet::new());
    // One trailing newline.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn render(out: &mut String, cmd: &Command, path: &str, inherited: &BTreeSet<String>) {
    let _ = writeln!(out, "## `{path}`\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{}\n", paragraphs(&about.to_string()));
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let _ = writeln!(out, "```text\n{usage}\n```\n");

    let subcommands: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .collect();
    if !subcommands.is_empty() {
        out.push_str("| command | what it does |\n|---|---|\n");
        for sub in &subcommands {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "| [`{}`](#{}) | {} |",
                sub.get_name(),
                anchor(&format!("{path} {}", sub.get_name())),
                cell(&about)
            );
        }
        out.push('\n');
    }

    let shown = |a: &&Arg| {
        !a.is_hide_set()
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            && !inherited.contains(a.get_id().as_str())
    };
    let positionals: Vec<&Arg> = cmd.get_positionals().filter(shown).collect();
    if !positionals.is_empty() {
        out.push_str("| argument | meaning |\n|---|---|\n");
        for arg in positionals {
            let name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let repeat = if matches!(arg.get_action(), ArgAction::Append) {
                "..."
            } else {
                ""
            };
            let required = if arg.is_required_set() {
                ""
            } else {
                " Optional."
            };
            let _ = writeln!(
                out,
                "| `<{name}>{repeat}` | {}{required} |",
                cell(&sentence(help(arg)))
            );
        }
        out.push('\n');
    }

    let options: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional())
        .filter(shown)
        .collect();
    if !options.is_empty() {
        out.push_str("| flag | env | default | meaning |\n|---|---|---|---|\n");
        for arg in &options {
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default = match arg.get_action() {
                _ if arg.is_hide_default_value_set() => String::new(),
                ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => String::new(),
                _ => arg
                    .get_default_values()
                    .iter()
                    .map(|v| format!("`{}`", v.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let mut meaning = sentence(help(arg));
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if !values.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
                let _ = write!(meaning, " One of {}.", values.join(", "));
            }
            if matches!(arg.get_action(), ArgAction::Append)
                && !meaning.to_lowercase().contains("repeat")
            {
                meaning.push_str(" Repeatable.");
            }
            if arg.is_global_set() && cmd.has_subcommands() {
                meaning.push_str(" Also accepted after any subcommand.");
            }
            let _ = writeln!(
                out,
                "| {} | {env} | {default} | {} |",
                flag(arg),
                cell(meaning.trim())
            );
        }
        out.push('\n');
    }

    // Global arguments are listed once, where they are declared.
    let mut inherited = inherited.clone();
    inherited.extend(
        cmd.get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().to_string()),
    );
    for sub in subcommands {
        render(out, sub, &format!("{path} {}", sub.get_name()), &inherited);
    }
}

/// `-o, --output <OUTPUT>`.
fn flag(arg: &Arg) -> String {
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let mut s = names.join(", ");
    if arg.get_action().takes_values() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        let _ = write!(s, " <{value}>");
    }
    format!("`{s}`")
}

/// An argument's help, long form if it has one.
fn help(arg: &Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(|h| paragraphs(&h.to_string()))
        .unwrap_or_default()
}

/// Doc-comment text as Markdown: lines of one paragraph joined, paragraphs
/// kept apart.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `text` ending in a full stop (clap drops the one of a one-line doc
/// comment), so that more can follow.
fn sentence(mut text: String) -> String {
    if text
        .chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, ')' | ']' | '`'))
    {
        text.push('.');
    }
    text
}

/// Text for a table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace("\n\n", "<br>")
        .replace('\n', " ")
        .replace('|', "\\|")
}

/// The anchor mdBook gives a heading `` `conductor cache list` ``.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
