//! Tables of strings (a header and rows), rendered as an HTML `<table>` or as a PNG.

use image::{Rgb, RgbImage};
use imageproc::drawing::draw_filled_rect_mut;
use imageproc::rect::Rect;

use crate::error::{Error, Result};
use crate::overlay::MAX_SIDE;
use crate::style::{BLACK, WHITE};
use crate::text;

/// Escapes `&`, `<`, `>`, `"` and `'` so that `s` is safe as HTML text or attribute value.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a cell reads as a number (such cells are right-aligned): `12`, `-0.5`, `1e-3`,
/// `3.2%`, `0.052 ± 0.004`.
fn is_numeric(cell: &str) -> bool {
    let first = cell.split_whitespace().next().unwrap_or("");
    let t = first.trim_end_matches('%');
    !t.is_empty() && t.parse::<f64>().is_ok()
}

/// A table: header cells, rows of cells, optional caption. Rows may have different lengths;
/// short rows are padded with empty cells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Body rows.
    pub rows: Vec<Vec<String>>,
    /// Caption shown above the table.
    pub caption: Option<String>,
}

/// Options for [`Table::to_png`].
#[derive(Debug, Clone, PartialEq)]
pub struct TableImageOptions {
    /// Font size in pixels (default 16).
    pub font_size: f32,
    /// Space between text and cell border, in pixels (default 8).
    pub padding: u32,
    /// Widest a column may get; longer cells are shortened with "…" (default 480).
    pub max_col_width: u32,
    /// Header background (default light grey).
    pub header_background: Rgb<u8>,
    /// Background of every other body row (default very light grey).
    pub stripe_background: Rgb<u8>,
    /// Colour of the lines between cells.
    pub rule_color: Rgb<u8>,
}

impl Default for TableImageOptions {
    fn default() -> Self {
        Self {
            font_size: 16.0,
            padding: 8,
            max_col_width: 480,
            header_background: Rgb([225, 228, 235]),
            stripe_background: Rgb([245, 246, 249]),
            rule_color: Rgb([190, 190, 190]),
        }
    }
}

impl Table {
    /// A table with these column titles and no rows.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets the caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// Appends a row.
    pub fn push_row<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(row.into_iter().map(Into::into).collect());
        self
    }

    /// Number of columns: the longest of the header and the rows.
    pub fn n_cols(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain(std::iter::once(self.header.len()))
            .max()
            .unwrap_or(0)
    }

    /// The table as CSV (RFC 4180): the header line, then one line per row, every line ending
    /// in `\n`; a cell holding a comma, a quote or a line break is quoted, its quotes doubled.
    /// The caption is not written. Rows shorter than the header are padded with empty cells.
    pub fn to_csv(&self) -> String {
        fn field(out: &mut String, cell: &str) {
            if cell.contains([',', '"', '\n', '\r']) {
                out.push('"');
                out.push_str(&cell.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(cell);
            }
        }
        let n = self.n_cols();
        let mut out = String::new();
        let lines = (!self.header.is_empty())
            .then_some(&self.header)
            .into_iter()
            .chain(&self.rows);
        for line in lines {
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                field(&mut out, line.get(i).map_or("", String::as_str));
            }
            out.push('\n');
        }
        out
    }

    /// The table as an HTML `<table>` element (all text escaped). Numeric cells get
    /// `class="num"` so a style sheet can right-align them.
    pub fn to_html(&self) -> String {
        let n = self.n_cols();
        let mut s = String::from("<table>\n");
        if let Some(c) = &self.caption {
            s.push_str(&format!("<caption>{}</caption>\n", escape_html(c)));
        }
        if !self.header.is_empty() {
            s.push_str("<thead><tr>");
            for i in 0..n {
                let h = self.header.get(i).map_or("", String::as_str);
                s.push_str(&format!("<th>{}</th>", escape_html(h)));
            }
            s.push_str("</tr></thead>\n");
        }
        s.push_str("<tbody>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for i in 0..n {
                let c = row.get(i).map_or("", String::as_str);
                if is_numeric(c) {
                    s.push_str(&format!("<td class=\"num\">{}</td>", escape_html(c)));
                } else {
                    s.push_str(&format!("<td>{}</td>", escape_html(c)));
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>");
        s
    }

    /// The table drawn as an image: bold header on a grey band, striped rows, numeric cells
    /// right-aligned, caption above. The size follows from the content. A table with a header
    /// but no rows shows "(no rows)"; one with neither is an error.
    pub fn to_png(&self, opts: &TableImageOptions) -> Result<RgbImage> {
        let n = self.n_cols();
        if n == 0 {
            return Err(Error::empty("table without header and rows"));
        }
        if !(opts.font_size.is_finite() && opts.font_size >= 6.0) {
            return Err(Error::invalid(format!("font size {}", opts.font_size)));
        }
        let regular = text::sans()?;
        let bold = text::sans_bold()?;
        let size = opts.font_size;
        let pad = opts.padding;
        let line_h = (size * 1.3).ceil() as u32;
        let row_h = line_h + pad;
        let max_text = opts.max_col_width.saturating_sub(2 * pad).max(8);

        let note = ["(no rows)".to_string()];
        let body: Vec<&[String]> = if self.rows.is_empty() {
            vec![&note[..]]
        } else {
            self.rows.iter().map(Vec::as_slice).collect()
        };
        // Fit every cell first, then measure columns on the fitted text.
        let fit =
            |font: &ab_glyph::FontRef<'_>, s: &str| text::fit_text(font, size, size, s, max_text).1;
        let header: Vec<String> = (0..n)
            .map(|i| fit(&bold, self.header.get(i).map_or("", String::as_str)))
            .collect();
        let cells: Vec<Vec<String>> = body
            .iter()
            .map(|r| {
                (0..n)
                    .map(|i| fit(&regular, r.get(i).map_or("", String::as_str)))
                    .collect()
            })
            .collect();
        let mut widths = vec![0u32; n];
        if !self.header.is_empty() {
            for (w, h) in widths.iter_mut().zip(&header) {
                *w = (*w).max(text::text_size(&bold, size, h).0);
            }
        }
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(text::text_size(&regular, size, c).0);
            }
        }
        let widths: Vec<u32> = widths.iter().map(|w| w + 2 * pad).collect();
        let table_w: u32 = widths.iter().sum::<u32>() + 1;

        let caption = self.caption.as_deref().filter(|c| !c.is_empty());
        let cap_size = size * 1.1;
        let cap_h = if caption.is_some() {
            (cap_size * 1.3).ceil() as u32 + pad
        } else {
            0
        };
        let header_rows = u32::from(!self.header.is_empty());
        let total_w = (table_w + 2 * pad) as u64;
        let total_h = cap_h as u64
            + (header_rows as u64 + cells.len() as u64) * row_h as u64
            + 1
            + 2 * pad as u64;
        if total_w > MAX_SIDE as u64 || total_h > MAX_SIDE as u64 {
            return Err(Error::invalid(format!(
                "table image of {total_w}x{total_h} exceeds {MAX_SIDE} px per side"
            )));
        }
        let mut img = RgbImage::from_pixel(total_w as u32, total_h as u32, WHITE);
        let (x0, mut y) = (pad, pad);
        if let Some(c) = caption {
            let (s, t) = text::fit_text(&bold, cap_size, 9.0, c, total_w as u32 - 2 * pad);
            text::draw_text(&mut img, &bold, s, (x0 as i32, y as i32), BLACK, &t);
            y += cap_h;
        }
        let top = y;
        let text_dy = pad / 2 + (line_h.saturating_sub(size.ceil() as u32 + 2)) / 2;
        let draw_row = |img: &mut RgbImage,
                        y: u32,
                        row: &[String],
                        font: &ab_glyph::FontRef<'_>,
                        bg: Option<Rgb<u8>>,
                        color: Rgb<u8>,
                        align_numbers: bool| {
            if let Some(bg) = bg {
                draw_filled_rect_mut(
                    img,
                    Rect::at(x0 as i32, y as i32).of_size(table_w, row_h),
                    bg,
                );
            }
            let mut x = x0;
            for (c, w) in row.iter().zip(&widths) {
                let tw = text::text_size(font, size, c).0;
                let tx = if align_numbers && is_numeric(c) {
                    x + w - pad - tw
                } else {
                    x + pad
                };
                text::draw_text(img, font, size, (tx as i32, (y + text_dy) as i32), color, c);
                x += w;
            }
        };
        if header_rows == 1 {
            draw_row(
                &mut img,
                y,
                &header,
                &bold,
                Some(opts.header_background),
                BLACK,
                false,
            );
            y += row_h;
        }
        for (r, row) in cells.iter().enumerate() {
            let bg = (r % 2 == 1).then_some(opts.stripe_background);
            let color = if self.rows.is_empty() {
                Rgb([110, 110, 110])
            } else {
                BLACK
            };
            draw_row(&mut img, y, row, &regular, bg, color, true);
            y += row_h;
        }
        // Rules: horizontal under each row, vertical between columns, and a frame.
        let bottom = y;
        for k in 0..=(header_rows + cells.len() as u32) {
            let ry = top + k * row_h;
            draw_filled_rect_mut(
                &mut img,
                Rect::at(x0 as i32, ry as i32).of_size(table_w, 1),
                opts.rule_color,
            );
        }
        let mut x = x0;
        for w in widths.iter().chain(std::iter::once(&0)) {
            draw_filled_rect_mut(
                &mut img,
                Rect::at(x as i32, top as i32).of_size(1, bottom - top + 1),
                opts.rule_color,
            );
            x += w;
        }
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_the_cells_that_need_it_and_pads_short_rows() {
        let mut t = Table::new(["run", "label", "nme"]).with_caption("not written");
        t.push_row(["a", "bs 1, lr 1e-3", "0.05"]);
        t.push_row(["b", "say \"hi\"\nthere"]);
        assert_eq!(
            t.to_csv(),
            "run,label,nme\na,\"bs 1, lr 1e-3\",0.05\nb,\"say \"\"hi\"\"\nthere\",\n"
        );
        assert_eq!(Table::default().to_csv(), "");
    }

    fn sample() -> Table {
        let mut t = Table::new(["model", "NME", "AUC@0.08"]).with_caption("Table 1 <test>");
        t.push_row(["bs 1, lr 1e-3", "0.052", "0.41"]);
        t.push_row(["a<b & \"c\"", "3.2%"]);
        t
    }

    #[test]
    fn escape_html_escapes_all_special_characters() {
        assert_eq!(
            escape_html(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain ± text"), "plain ± text");
    }

    #[test]
    fn html_table_is_escaped_padded_and_marks_numbers() {
        let html = sample().to_html();
        assert!(html.contains("<caption>Table 1 &lt;test&gt;</caption>"));
        assert!(html.contains("<th>AUC@0.08</th>"));
        assert!(html.contains("<td>a&lt;b &amp; &quot;c&quot;</td>"));
        assert!(html.contains("<td class=\"num\">0.052</td>"));
        assert!(html.contains("<td class=\"num\">3.2%</td><td></td></tr>"));
        assert!(!html.contains("<b &"));
        assert_eq!(html.matches("<tr>").count(), 3);
    }

    #[test]
    fn numeric_detection() {
        for s in ["12", "-0.5", "1e-3", "3.2%", "0.052 ± 0.004"] {
            assert!(is_numeric(s), "{s}");
        }
        for s in ["", "bs 1", "n/a", "%"] {
            assert!(!is_numeric(s), "{s}");
        }
    }

    #[test]
    fn png_has_content_dependent_size_and_dark_text() {
        let img = sample().to_png(&TableImageOptions::default()).unwrap();
        let row_h = (16.0f32 * 1.3).ceil() as u32 + 8;
        let cap_h = (17.6f32 * 1.3).ceil() as u32 + 8;
        assert_eq!(img.height(), cap_h + 3 * row_h + 1 + 16);
        assert!(img.width() > 200);
        let dark = img.pixels().filter(|p| p[0] < 80).count();
        assert!(dark > 200, "{dark}");
        // A wider cell makes a wider image.
        let mut wide = sample();
        wide.push_row(["a much much longer model name than before"]);
        assert!(wide.to_png(&TableImageOptions::default()).unwrap().width() > img.width());
    }

    #[test]
    fn header_only_long_cells_and_empty_tables() {
        let t = Table::new(["only", "header"]);
        let img = t.to_png(&TableImageOptions::default()).unwrap();
        assert!(img.height() > 0);
        let mut long = Table::new(["x"]);
        long.push_row(["y".repeat(10_000)]);
        let img = long.to_png(&TableImageOptions::default()).unwrap();
        assert!(img.width() <= 480 + 16 + 1);
        assert!(Table::default()
            .to_png(&TableImageOptions::default())
            .is_err());
        assert_eq!(
            Table::default().to_html(),
            "<table>\n<tbody>\n</tbody>\n</table>"
        );
    }
}
