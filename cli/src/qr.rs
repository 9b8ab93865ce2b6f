//! `zhaowo qr`: the QR code of a window's citizen page, as SVG or PNG for printing, or in the terminal.

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
    /// Write an SVG or PNG file (by its extension; print it for the window); without it, the code is drawn in the
    /// terminal.
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
        Some(path) if path.extension().is_some_and(|ext| ext == "png") => {
            let png = png_of(&code);
            std::fs::write(path, png).with_context(|| format!("failed to write `{}`", path.display()))?;
            say(cli, &format!("{} ({}) → {url} written to {}", args.window, window.name, path.display()));
        }
        Some(path) => {
            return Err(expected(format!("`{}`: write a .svg or .png file", path.display())));
        }
        None => {
            out!("{}", code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build());
            out!("{url}  {}", window.name);
        }
    }
    Ok(())
}

/// Pixels per QR module in the PNG: a version-3 code (29 modules + quiet zone) comes out at 296 px, sharp at 3 cm
/// printed at 250 dpi.
const PNG_MODULE_PX: usize = 8;
/// Modules of white border the QR standard asks for.
const PNG_QUIET_MODULES: usize = 4;

/// The code as an 8-bit grayscale PNG (signature, IHDR, one zlib IDAT, IEND).
fn png_of(code: &qrcode::QrCode) -> Vec<u8> {
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * PNG_QUIET_MODULES) * PNG_MODULE_PX;
    let mut raw = Vec::with_capacity(side * (side + 1));
    for y in 0..side {
        raw.push(0); // filter: none
        let row = (y / PNG_MODULE_PX).checked_sub(PNG_QUIET_MODULES).filter(|row| *row < modules);
        for x in 0..side {
            let column = (x / PNG_MODULE_PX).checked_sub(PNG_QUIET_MODULES).filter(|column| *column < modules);
            let dark = matches!((row, column), (Some(r), Some(c)) if colors[r * modules + c] == qrcode::Color::Dark);
            raw.push(if dark { 0 } else { 255 });
        }
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, &raw).expect("writing to memory");
    let idat = encoder.finish().expect("writing to memory");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend((side as u32).to_be_bytes());
    ihdr.extend((side as u32).to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit, grayscale, deflate, adaptive filtering, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", ihdr.as_slice()), (b"IDAT", idat.as_slice()), (b"IEND", &[][..])] {
        png.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend(kind);
        png.extend(data);
        png.extend(crc.sum().to_be_bytes());
    }
    png
}
