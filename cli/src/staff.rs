//! `zhaowo staff`: web desk accounts kept in the hall document (admin node only), so a clerk signs in at any window.

use crate::{Cli, print_json, say};
use clap::{Args, Subcommand};
use std::io::Read;
use zhaowo_crdt::model::Role;
use zhaowo_node::home::{HomeError, now_ms};

/// Passwords read from stdin: a line, not a file.
const PASSWORD_STDIN_BYTES_MAX: u64 = 1024;

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Create or replace a staff account (the password is stored as an argon2id hash).
    Add(AddArgs),
    /// List the staff accounts (never the hashes).
    List,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Login name: 1-32 ASCII letters, digits, `_`, `.` or `-`.
    pub username: String,
    /// Role: window, supervision, volunteer or admin.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// The staff member's name, recorded on every action.
    #[arg(long)]
    pub name: String,
    /// Read the password from the first line of stdin (required: passwords never go on the command line).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
        .filter(|role| *role != Role::Citizen)
        .ok_or_else(|| format!("`{text}` is not a role: window, supervision, volunteer or admin"))
}

pub fn run(cli: &Cli, command: &StaffCommand) -> anyhow::Result<()> {
    let mut home = crate::setup::open(cli)?;
    match command {
        StaffCommand::Add(args) => {
            let mut input = String::new();
            std::io::stdin().take(PASSWORD_STDIN_BYTES_MAX).read_to_string(&mut input)?;
            let password = input.lines().next().unwrap_or_default();
            home.set_account(&args.username, &args.name, args.role, password, now_ms()).map_err(
                |error| match error {
                    HomeError::NotAdmin | HomeError::NoHall | HomeError::Invalid(_) => crate::expected_home(&error),
                    other => anyhow::Error::new(other),
                },
            )?;
            say(
                cli,
                &format!("account {} ({}, {}) saved in the hall document", args.username, args.name, args.role.code()),
            );
        }
        StaffCommand::List => {
            let hall = home.hall()?;
            if cli.json {
                let list: Vec<serde_json::Value> = hall
                    .accounts
                    .iter()
                    .map(|(user, a)| serde_json::json!({ "username": user, "name": a.display_name, "role": a.role.code(), "disabled": a.disabled }))
                    .collect();
                print_json(&serde_json::Value::Array(list));
            } else {
                for (user, account) in &hall.accounts {
                    crate::out!("{user}\t{}\t{}", account.display_name, account.role.code());
                }
            }
        }
    }
    Ok(())
}
