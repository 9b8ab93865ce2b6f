//! `zhaowo qr`: the QR code of a window's citizen page, as SVG for printing or in the terminal.

use crate::setup::open;
use crate::{Cli, expected, out, say};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct QrArgs {
    /// The window whose citizen page the code opens.
    #[arg(long)]
    pub window: String,
    /// The citizen pages' address on the hall LAN (what phones on the Wi-Fi reach).
    #[arg(long, default_value = "http://127.0.0.1:7422")]
    pub base: String,
    /// Write an SVG file (print it for the window); without it, the code is drawn in the terminal.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cli: &Cli, args: &QrArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    let hall = home.hall()?;
    let Some(window) = hall.windows.get(&args.window) else {
        return Err(expected(format!("the hall has no window `{}`", args.window)));
    };
    if !(args.base.starts_with("http://") || args.base.starts_with("https://")) {
        return Err(expected(format!("`{}` is not an http(s) address", args.base)));
    }
    let url = format!("{}/r/{}", args.base.trim_end_matches('/'), args.window);
    let code = qrcode::QrCode::new(url.as_bytes()).context("the address is too long for a QR code")?;
    match &args.out {
        Some(path) if path.extension().is_some_and(|ext| ext == "svg") => {
            let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build();
            std::fs::write(path, svg).with_context(|| format!("failed to write `{}`", path.display()))?;
            say(cli, &format!("{} ({}) → {url} written to {}", args.window, window.name, path.display()));
        }
        Some(path) => {
            return Err(expected(format!("`{}`: only .svg is supported (print it at any size)", path.display())));
        }
        None => {
            out!("{}", code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build());
            out!("{url}  {}", window.name);
        }
    }
    Ok(())
}
