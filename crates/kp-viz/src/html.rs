//! A small self-contained HTML report: headings, paragraphs, tables, figures and
//! preformatted text, with inline CSS, written atomically.

use std::path::Path;

use crate::error::Result;
use crate::io::write_atomic;
use crate::table::{escape_html, Table};

/// One block of an [`HtmlReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// A section heading (`<h2>`), listed in the table of contents.
    Heading(String),
    /// A sub-heading (`<h3>`).
    Subheading(String),
    /// A paragraph of plain text (escaped; blank lines are not interpreted).
    Paragraph(String),
    /// A table.
    Table(Table),
    /// An image referenced by a path relative to the HTML file, with a caption.
    Figure {
        /// Relative path of the image (e.g. `figures/curve.png`).
        src: String,
        /// Caption under the image.
        caption: String,
    },
    /// Preformatted text such as a model summary (`<pre>`).
    Preformatted(String),
}

/// Builder for a one-file HTML report.
///
/// ```
/// use kp_viz::{HtmlReport, Table};
/// let mut table = Table::new(["model", "NME"]);
/// table.push_row(["NoseTipNet", "0.041"]);
/// let mut report = HtmlReport::new("Reproduction");
/// report
///     .heading("Nose tip")
///     .paragraph("Results on the validation set.")
///     .table(table)
///     .figure("figures/curve.png", "Training loss (blue) and validation loss (orange).");
/// let html = report.to_html();
/// assert!(html.contains("<img src=\"figures/curve.png\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HtmlReport {
    title: String,
    sections: Vec<Section>,
}

const CSS: &str = "\
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;max-width:1100px;\
margin:2em auto;padding:0 1em;color:#222;line-height:1.5}\
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}\
h2{margin-top:2em;border-bottom:1px solid #eee;padding-bottom:.2em}\
nav ul{columns:2;padding-left:1.2em}\
table{border-collapse:collapse;margin:1em 0;font-size:.95em}\
caption{caption-side:top;text-align:left;font-weight:bold;padding:.3em 0}\
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
th{background:#e1e4eb}tbody tr:nth-child(even){background:#f5f6f9}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{color:#555;font-size:.95em;margin-top:.3em}\
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}\
code{background:#f3f4f6;padding:0 .25em;border-radius:3px;font-size:.9em}";

impl HtmlReport {
    /// An empty report with this page title (shown as `<title>` and `<h1>`).
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            sections: Vec::new(),
        }
    }

    /// Appends any section.
    pub fn push(&mut self, section: Section) -> &mut Self {
        self.sections.push(section);
        self
    }

    /// Appends a section heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Section::Heading(text.into()))
    }

    /// Appends a sub-heading.
    pub fn subheading(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Section::Subheading(text.into()))
    }

    /// Appends a paragraph.
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Section::Paragraph(text.into()))
    }

    /// Appends a table.
    pub fn table(&mut self, table: Table) -> &mut Self {
        self.push(Section::Table(table))
    }

    /// Appends a figure: `src` is the image path relative to the HTML file.
    pub fn figure(&mut self, src: impl Into<String>, caption: impl Into<String>) -> &mut Self {
        self.push(Section::Figure {
            src: src.into(),
            caption: caption.into(),
        })
    }

    /// Appends preformatted text (e.g. a printed model architecture).
    pub fn preformatted(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Section::Preformatted(text.into()))
    }

    /// The page title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The sections added so far, in order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The complete HTML document (UTF-8, inline CSS, all text escaped). With two or more
    /// headings a table of contents follows the title.
    pub fn to_html(&self) -> String {
        let title = escape_html(&self.title);
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        );
        let headings: Vec<&String> = self
            .sections
            .iter()
            .filter_map(|sec| match sec {
                Section::Heading(h) => Some(h),
                _ => None,
            })
            .collect();
        if headings.len() >= 2 {
            s.push_str("<nav><ul>\n");
            for (i, h) in headings.iter().enumerate() {
                s.push_str(&format!(
                    "<li><a href=\"#sec-{}\">{}</a></li>\n",
                    i + 1,
                    escape_html(h)
                ));
            }
            s.push_str("</ul></nav>\n");
        }
        let mut n_heading = 0;
        for sec in &self.sections {
            match sec {
                Section::Heading(h) => {
                    n_heading += 1;
                    s.push_str(&format!(
                        "<h2 id=\"sec-{n_heading}\">{}</h2>\n",
                        escape_html(h)
                    ));
                }
                Section::Subheading(h) => s.push_str(&format!("<h3>{}</h3>\n", escape_html(h))),
                Section::Paragraph(p) => s.push_str(&format!("<p>{}</p>\n", inline_html(p))),
                Section::Table(t) => {
                    s.push_str(&t.to_html());
                    s.push('\n');
                }
                Section::Figure { src, caption } => s.push_str(&format!(
                    "<figure>\n<img src=\"{}\" alt=\"{}\" loading=\"lazy\">\n\
                     <figcaption>{}</figcaption>\n</figure>\n",
                    escape_html(src),
                    escape_html(&caption.replace('`', "")),
                    inline_html(caption)
                )),
                Section::Preformatted(p) => {
                    s.push_str(&format!("<pre>{}</pre>\n", escape_html(p)));
                }
            }
        }
        s.push_str("</body>\n</html>\n");
        s
    }

    /// Writes [`to_html`](Self::to_html) to `path` atomically (temporary file + rename),
    /// creating missing parent directories.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, self.to_html().as_bytes())
    }
}

/// A paragraph's text as HTML: escaped, with `code` spans (between backticks, as the report's
/// texts write commands and file names) set in `<code>`; an unpaired backtick stays as it is.
fn inline_html(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in parts.iter().enumerate() {
        let paired = i % 2 == 1 && i + 1 < parts.len();
        let unpaired_tail = i % 2 == 1 && !paired;
        if paired {
            out.push_str(&format!("<code>{}</code>", escape_html(part)));
        } else {
            if unpaired_tail {
                out.push('`');
            }
            out.push_str(&escape_html(part));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HtmlReport {
        let mut t = Table::new(["a", "b"]);
        t.push_row(["<x>", "1"]);
        let mut r = HtmlReport::new("Report <1>");
        r.heading("Nose & tip")
            .paragraph("A \"quoted\" <script>alert(1)</script> text")
            .table(t)
            .figure("fig dir/a\".png", "Caption <b>")
            .heading("Second")
            .subheading("Sub")
            .preformatted("Conv2d(1, 16, kernel_size=(3, 3))\n  <tail>");
        r
    }

    #[test]
    fn backtick_spans_become_code_and_stay_escaped() {
        assert_eq!(
            inline_html("run `kp eval --run <dir>` then `a&b`."),
            "run <code>kp eval --run &lt;dir&gt;</code> then <code>a&amp;b</code>."
        );
        assert_eq!(inline_html("one ` alone"), "one ` alone");
        assert_eq!(inline_html("no code"), "no code");
        let mut r = HtmlReport::new("t");
        r.paragraph("see `results.json`");
        assert!(r.to_html().contains("<p>see <code>results.json</code></p>"));
    }

    #[test]
    fn html_is_complete_and_escaped() {
        let html = sample().to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("<title>Report &lt;1&gt;</title>"));
        assert!(html.contains("<h2 id=\"sec-1\">Nose &amp; tip</h2>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<img src=\"fig dir/a&quot;.png\" alt=\"Caption &lt;b&gt;\""));
        assert!(html.contains("<td>&lt;x&gt;</td>"));
        assert!(html.contains("<pre>Conv2d(1, 16, kernel_size=(3, 3))\n  &lt;tail&gt;</pre>"));
        assert!(html.contains("<style>"));
        assert!(!html.contains("<link"));
    }

    #[test]
    fn table_of_contents_only_with_two_headings() {
        let html = sample().to_html();
        assert!(html.contains("<a href=\"#sec-2\">Second</a>"));
        let mut one = HtmlReport::new("t");
        one.heading("only");
        assert!(!one.to_html().contains("<nav>"));
        assert_eq!(one.sections(), &[Section::Heading("only".into())]);
        assert_eq!(one.title(), "t");
    }

    #[test]
    fn write_is_atomic_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report").join("index.html");
        sample().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), sample().to_html());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
