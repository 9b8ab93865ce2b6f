//! `init`, `enroll`, `join`, `revoke`, `status`: the node's data directory and its membership in the hall.

use crate::{Cli, Expected, expected, out, print_json, say};
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use zhaowo_crdt::model::Role;
use zhaowo_node::home::{Home, HomeError, InitOptions, now_ms};
use zhaowo_node::identity::{IdentityError, Passphrase};

/// Opens the node in `--dir`, with context for every error; protected key files are opened with the passphrase of
/// `ZHAOWO_PASSPHRASE` or one asked on the terminal.
pub fn open(cli: &Cli) -> anyhow::Result<Home> {
    let context = || format!("failed to open the node in `{}`", cli.dir.display());
    // A missing or unreadable key file: `Home::open` says which, with its hint.
    if !Home::is_protected(&cli.dir).unwrap_or(false) {
        return Home::open(&cli.dir).with_context(context);
    }
    let passphrase = passphrase(crate::env_vars::ZHAOWO_PASSPHRASE, "passphrase of this node's keys: ", false)?;
    match Home::open_with(&cli.dir, Some(&passphrase)) {
        Err(HomeError::Identity(error @ IdentityError::WrongPassphrase { .. })) => Err(anyhow::Error::new(Expected {
            message: error.to_string(),
            hint: Some(format!(
                "check {} (or type it again); a lost passphrase cannot be recovered: the node is then restored like \
                 a node whose key is lost (a new node, enrolled by the admin, `zhaowo restore`)",
                crate::env_vars::ZHAOWO_PASSPHRASE
            )),
        })
        .context(context())),
        other => other.with_context(context),
    }
}

/// A passphrase from the environment variable `var`, else asked on the terminal (twice for a new one); without a
/// terminal and without the variable, an expected failure naming the variable.
pub fn passphrase(var: &str, prompt: &str, new: bool) -> anyhow::Result<Passphrase> {
    let make = |text: String| if new { Passphrase::new(text) } else { Passphrase::given(text) };
    if let Ok(text) = std::env::var(var) {
        return make(text).map_err(|error| expected(format!("{var}: {error}")));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(anyhow::Error::new(Expected {
            message: "a passphrase is needed and there is no terminal to ask it on".to_owned(),
            hint: Some(format!("set {var} (for a service, in its environment file readable only by its user)")),
        }));
    }
    let first = rpassword::prompt_password(prompt).context("cannot read the passphrase from the terminal")?;
    if new {
        let again = rpassword::prompt_password("the same passphrase again: ")
            .context("cannot read the passphrase from the terminal")?;
        if again != first {
            return Err(expected("the two passphrases differ: nothing was changed".to_owned()));
        }
    }
    make(first).map_err(|error| expected(error.to_string()))
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
        .filter(|role| *role != Role::Citizen)
        .ok_or_else(|| format!("`{text}` is not a role: window, supervision, volunteer or admin"))
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Set up a new hall with this name; this node becomes its admin and holds the hall root key.
    #[arg(long)]
    pub hall: Option<String>,
    /// The window code this node registers cases under (e.g. BBC01, 2F03); unique in the hall.
    #[arg(long)]
    pub window: String,
    /// The node's role: window, supervision, volunteer or admin (default: admin with --hall, else window).
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// A name people recognise, e.g. "办不成事窗口 1号机".
    #[arg(long)]
    pub name: Option<String>,
    /// QUIC address for peers.
    #[arg(long, default_value = "0.0.0.0:7420")]
    pub listen: SocketAddr,
    /// HTTP address of the staff desk.
    #[arg(long, default_value = "127.0.0.1:7421")]
    pub http: SocketAddr,
    /// Protect the key files with a passphrase (from ZHAOWO_PASSPHRASE, else asked twice on the terminal): every
    /// later command and `zhaowo run` then need it.
    #[arg(long)]
    pub passphrase: bool,
}

pub fn init(cli: &Cli, args: &InitArgs) -> anyhow::Result<()> {
    let role = args.role.unwrap_or(if args.hall.is_some() { Role::Admin } else { Role::Window });
    if args.hall.is_some() && role != Role::Admin {
        // Peers take hall-document changes (accounts, routing) only from admin nodes: a hall set up by a node of
        // another role could never spread an edit.
        return Err(expected(format!(
            "the node that sets up a hall holds its root key and must have the role admin, not {}",
            role.code()
        )));
    }
    let options = InitOptions {
        hall_name: args.hall.clone(),
        window: args.window.clone(),
        role,
        display_name: args.name.clone().unwrap_or_else(|| format!("{} 窗口", args.window)),
        listen: args.listen,
        http_listen: args.http,
    };
    let home = match args.passphrase {
        true => {
            let passphrase =
                passphrase(crate::env_vars::ZHAOWO_PASSPHRASE, "new passphrase for this node's keys: ", true)?;
            Home::init_protected(&cli.dir, options, &passphrase, now_ms())
        }
        false => Home::init(&cli.dir, options, now_ms()),
    }
    .with_context(|| format!("failed to create a node in `{}`", cli.dir.display()))?;
    let node_id = home.identity.node_id();
    if cli.json {
        print_json(
            &serde_json::json!({ "node_id": node_id, "window": home.config.window, "role": role.code(), "admin": home.is_admin() }),
        );
    } else {
        out!("{node_id}");
        if home.is_admin() {
            say(
                cli,
                &format!(
                    "created hall `{}` with this node as its admin (window {}) from a neutral template: one window, \
                     one unit, one category, the State Council holiday arrangements; make it this hall's with \
                     `zhaowo hall export --out hall.toml`, edit, `zhaowo hall import hall.toml`",
                    args.hall.as_deref().unwrap_or_default(),
                    args.window
                ),
            );
        } else {
            say(
                cli,
                "created a node; ask the hall's admin to run `zhaowo enroll` with the node id above, then `zhaowo join FILE`",
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The new node's id (printed by its `zhaowo init`).
    pub node_id: String,
    /// The window code the new node registers under.
    #[arg(long)]
    pub window: String,
    /// window, supervision, volunteer or admin.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// A name people recognise.
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the enrollment file.
    #[arg(long)]
    pub out: PathBuf,
}

fn expected_home_error(error: HomeError) -> anyhow::Error {
    match error {
        HomeError::NotAdmin | HomeError::NoHall | HomeError::Roster(_) | HomeError::Invalid(_) => {
            crate::expected_home(&error)
        }
        other => anyhow::Error::new(other),
    }
}

pub fn enroll(cli: &Cli, args: &EnrollArgs) -> anyhow::Result<()> {
    let mut home = open(cli)?;
    let name = args.name.clone().unwrap_or_else(|| format!("{} 窗口", args.window));
    let file = home.enroll(&args.node_id, &args.window, args.role, &name, now_ms()).map_err(expected_home_error)?;
    let text = serde_json::to_string_pretty(&file)?;
    std::fs::write(&args.out, text).with_context(|| format!("failed to write `{}`", args.out.display()))?;
    if cli.json {
        print_json(
            &serde_json::json!({ "node_id": args.node_id, "window": args.window, "role": args.role.code(), "file": args.out }),
        );
    } else {
        say(
            cli,
            &format!(
                "enrolled {} as {} at window {}; give {} to that node",
                args.node_id,
                args.role.code(),
                args.window,
                args.out.display()
            ),
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The enrollment file from `zhaowo enroll`.
    pub file: PathBuf,
}

pub fn join(cli: &Cli, args: &JoinArgs) -> anyhow::Result<()> {
    let mut home = open(cli)?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("failed to read `{}`", args.file.display()))?;
    let enrollment = home
        .join(&bytes)
        .map_err(expected_home_error)
        .with_context(|| format!("cannot join with `{}`", args.file.display()))?;
    if cli.json {
        print_json(
            &serde_json::json!({ "window": enrollment.window, "role": enrollment.role.code(), "peers": home.config.peers }),
        );
    } else {
        say(cli, &format!("joined the hall as {} at window {}", enrollment.role.code(), enrollment.window));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The node to revoke.
    pub node_id: String,
    /// Why (recorded in the roster).
    #[arg(long, default_value = "撤销")]
    pub reason: String,
}

pub fn revoke(cli: &Cli, args: &RevokeArgs) -> anyhow::Result<()> {
    let mut home = open(cli)?;
    home.revoke(&args.node_id, &args.reason, now_ms()).map_err(expected_home_error)?;
    say(cli, &format!("revoked {}", args.node_id));
    Ok(())
}

/// What is wrong with the node itself (not its store), for `verify`: a node key outside the roster it holds.
pub fn node_problems(home: &Home) -> Vec<String> {
    let mut problems = Vec::new();
    if home.key_in_roster() == Some(false) {
        problems.push(format!(
            "node key {} is not an active member of the roster: peers refuse this node (node.key replaced, or the \
             node was revoked)",
            home.identity.node_id()
        ));
    }
    problems
}

pub async fn status(cli: &Cli) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    let counts = store.counts().await.context("failed to read the store")?;
    // Before joining a hall a node has no configuration: said as such, never a default hall.
    let hall = match home.hall() {
        Ok(hall) => Some(hall),
        Err(HomeError::NoHall) => None,
        Err(error) => return Err(anyhow::Error::new(error).context("failed to read the hall configuration")),
    };
    let coverage = hall.as_ref().map(|hall| hall.calendar.coverage(zhaowo_crdt::time::Date::of_ms(now_ms())));
    let key_in_roster = home.key_in_roster();
    let accounts = hall.as_ref().map_or(0, |hall| hall.accounts.len());
    let repeated = store.repeated_numbers().await.context("failed to read the store")?;
    let quarantined = store.quarantined().await.context("failed to read the store")?;
    // Material files (issue 16): what the cases name, and how many of them this node holds (no reading: `verify` reads).
    let (named_files, named_bytes) = store.blob_totals().await.context("failed to read the store")?;
    let held_files = home.blobs()?.list().context("failed to list the material files")?;
    let held: std::collections::HashSet<&str> = held_files.iter().map(|(hash, _)| hash.as_str()).collect();
    let mut missing_files = 0usize;
    let mut after = String::new();
    loop {
        let page = store.blob_refs(&after, 1000).await.context("failed to read the store")?;
        let Some(last) = page.last() else { break };
        after = last.hash.clone();
        missing_files += page.iter().filter(|named| !held.contains(named.hash.as_str())).count();
    }
    let members: Vec<serde_json::Value> = home
        .roster()
        .map(|roster| {
            roster
                .active()
                .map(|e| serde_json::json!({ "node_id": zhaowo_node::home::hex(&e.node_key), "window": e.window, "role": e.role.code(), "name": e.display_name }))
                .collect()
        })
        .unwrap_or_default();
    // What each peer has acknowledged of this node's catalog (stored by sync): the documents it is behind on.
    let checkpoints = store.peer_checkpoints().await.context("failed to read the store")?;
    let peers: Vec<serde_json::Value> = checkpoints
        .iter()
        .map(|(key, checkpoint, behind)| {
            let member = home.roster().and_then(|roster| roster.active().find(|e| &e.node_key == key));
            serde_json::json!({
                "node_id": zhaowo_node::home::hex(key),
                "window": member.map(|e| e.window.clone()),
                "name": member.map(|e| e.display_name.clone()),
                "active_member": member.is_some(),
                "acknowledged_seq": checkpoint,
                "documents_behind": behind,
            })
        })
        .collect();
    // The hall document (configuration and desk accounts) as far as sync has brought it to this node.
    let history = home.hall_history();
    let last_edit = history.last().map(|edit| {
        serde_json::json!({ "what": edit.what, "by": edit.by, "at": zhaowo_crdt::time::format_rfc3339(edit.at_ms) })
    });
    if cli.json {
        print_json(&serde_json::json!({
            "hall_edits": history.len(),
            "hall_last_edit": last_edit,
            "accounts": accounts,
            "calendar_coverage": coverage,
            "key_in_roster": key_in_roster,
            "sync_peers": peers,
            "node_id": home.identity.node_id(),
            "window": home.config.window,
            "role": home.config.role.code(),
            "hall": hall.as_ref().map(|hall| hall.name.clone()),
            "admin": home.is_admin(),
            "members": members,
            "cases": counts.docs,
            "repeated_numbers": repeated.iter().map(|r| serde_json::json!({ "reg_no": r.reg_no, "case_ids": r.case_ids })).collect::<Vec<_>>(),
            "materials": { "named": named_files, "named_bytes": named_bytes, "missing": missing_files, "files_here": held_files.len() },
            "quarantined": { "count": quarantined.count, "case_ids": quarantined.docs.iter().map(|q| q.case_id.clone()).collect::<Vec<_>>() },
            "local_seq": counts.local_seq,
            "peers": home.config.peers,
        }));
    } else {
        out!("node     {}", home.identity.node_id());
        out!("window   {} ({})", home.config.window, home.config.role.label());
        match &hall {
            Some(hall) => {
                out!("hall     {}{}", hall.name, if home.is_admin() { " (admin: holds the hall root key)" } else { "" })
            }
            None => out!("hall     (not joined yet)"),
        }
        if key_in_roster == Some(false) {
            out!("roster   THIS NODE'S KEY IS NOT AN ACTIVE MEMBER: peers refuse it (a replaced node.key, or revoked)");
        }
        if let Some(coverage) = &coverage {
            match coverage.last_covered_day {
                Some(last) => out!("calendar holidays known to {last} ({} days left)", coverage.days_left),
                None => out!("calendar holidays of {} unknown: due dates count Monday to Friday", coverage.today.year),
            }
            if let Some(warning) = coverage.warning() {
                say(cli, &format!("warning: {warning}"));
            }
        }
        out!("members  {}", members.len());
        match history.last() {
            Some(edit) => out!(
                "hall doc {} edits, {} desk accounts; last: {} ({}, {})",
                history.len(),
                accounts,
                edit.what,
                edit.by,
                zhaowo_crdt::time::format_local_minute(edit.at_ms)
            ),
            None => out!("hall doc {accounts} desk accounts"),
        }
        out!("cases    {}", counts.docs);
        if named_files > 0 {
            out!(
                "materials {named_files} files named by cases ({}), {} not on this node yet",
                zhaowo_crdt::materials::size_zh(named_bytes),
                missing_files
            );
        }
        if !repeated.is_empty() {
            // Arrived by sync or from a file with a number already held: both cases are kept (see `zhaowo verify`).
            let numbers: Vec<&str> = repeated.iter().map(|r| r.reg_no.as_str()).collect();
            out!("numbers  {} registration numbers held by more than one case: {}", repeated.len(), numbers.join(", "));
        }
        if quarantined.count > 0 {
            let ids: Vec<&str> = quarantined.docs.iter().map(|q| q.case_id.as_str()).collect();
            out!("damaged  {} documents quarantined (not sent to peers): {}", quarantined.count, ids.join(", "));
        }
        out!("peers    {}", home.config.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        if peers.is_empty() {
            out!("sync     no peer has synced with this node yet");
        }
        for (peer, (key, _, behind)) in peers.iter().zip(&checkpoints) {
            let who = match (peer["window"].as_str(), peer["name"].as_str()) {
                (Some(window), Some(name)) => format!("{window} {name}"),
                _ => "(no longer a member)".to_owned(),
            };
            let state = if *behind == 0 { "caught up".to_owned() } else { format!("{behind} cases behind this node") };
            out!("sync     {} {who}: {state}", &zhaowo_node::home::hex(key)[..16]);
        }
    }
    Ok(())
}

/// `zhaowo key passphrase`: protect the key files with a passphrase, change it, or remove it.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Remove the passphrase: the key files are written in clear again (only for a PC that never leaves the hall).
    #[arg(long)]
    pub remove: bool,
}

pub fn key_passphrase(cli: &Cli, args: &PassphraseArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    let was = Home::is_protected(&cli.dir)?;
    let new = match args.remove {
        true => None,
        false => {
            Some(passphrase(crate::env_vars::ZHAOWO_NEW_PASSPHRASE, "new passphrase for this node's keys: ", true)?)
        }
    };
    home.set_passphrase(new.as_ref())
        .with_context(|| format!("failed to rewrite the key files in `{}`", cli.dir.display()))?;
    let files = if home.is_admin() { "node.key, hall.key" } else { "node.key" };
    if cli.json {
        print_json(&serde_json::json!({ "protected": new.is_some(), "was_protected": was, "files": files }));
    } else {
        say(
            cli,
            &match new {
                Some(_) => format!(
                    "{files} protected by the new passphrase; `zhaowo run` as a service needs it in {}",
                    crate::env_vars::ZHAOWO_PASSPHRASE
                ),
                None => format!("{files} written without a passphrase"),
            },
        );
    }
    Ok(())
}
