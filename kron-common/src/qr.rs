//! QR rendering for enrollment: terminal text (UTF-8 half blocks), PNG, and SVG for the page
//! of a one-time link (kron-web).

use qrcode::{EcLevel, QrCode, render::svg, render::unicode::Dense1x2};

/// Renders `data` (an otpauth URI) as a QR code of UTF-8 half blocks with a quiet zone, dark
/// modules drawn as spaces on a light background so it scans from dark and light terminals.
pub fn terminal(data: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L)?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Renders `data` as an 8-bit grayscale PNG, `scale` pixels per module, with a quiet zone.
pub fn png(data: &str, scale: u32) -> Result<Vec<u8>, String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| e.to_string())?;
    let modules = code.width() as u32;
    let quiet = 4;
    let side = (modules + 2 * quiet) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; (side * side) as usize];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (index as u32 % modules, index as u32 / modules);
        for dy in 0..scale {
            let row = (my + quiet) * scale + dy;
            let start = (row * side + (mx + quiet) * scale) as usize;
            pixels[start..start + scale as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Renders `data` as an inline SVG element (no XML prolog, so it can sit inside HTML), with a
/// quiet zone and a `viewBox`, so the page can scale it to the screen. `module` is the size of
/// one module in SVG units.
pub fn svg(data: &str, module: u32) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)?;
    let side = (code.width() as u32 + 8) * module;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(side, side)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // The renderer writes an XML declaration first; inside HTML it would be a stray node.
    Ok(match image.find("<svg") {
        Some(start) => image[start..].to_owned(),
        None => image,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_terminal_and_png() {
        let uri = "otpauth://totp/Kron:alice@host?secret=JBSWY3DPEHPK3PXP&issuer=Kron";
        let text = super::terminal(uri).unwrap();
        assert!(text.lines().count() > 10);
        assert!(text.contains('▀') || text.contains('▄') || text.contains('█'));
        let png = super::png(uri, 4).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = super::svg(uri, 4).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("viewBox"), "{svg}");
        assert!(!svg.contains("JBSWY3DP"), "the data is drawn, not written");
    }
}
