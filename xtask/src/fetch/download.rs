//! Streaming HTTP download into `<name>.part` with resume (HTTP Range) and retries.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::{progress_bar, Options};

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// The server could not be reached at all: try the next mirror.
    Unreachable(anyhow::Error),
    /// The transfer broke off: retry (resuming) on the same URL.
    Interrupted(anyhow::Error),
    /// Anything else (HTTP 404, local I/O error): give up on this URL.
    Fatal(anyhow::Error),
}

pub fn agent(opts: &Options) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        // Never let a server compress the archive on the fly: byte offsets must stay valid.
        .accept_encoding("identity")
        .user_agent(concat!("kp-xtask/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `host[:port]` of a URL, for messages.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

/// Ends every "server unreachable" message.
pub const OFFLINE_HINT: &str = " (no internet? use --from DIR)";

fn unreachable_msg(url: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("could not reach {}: {why}{OFFLINE_HINT}", host_of(url))
}

fn classify(url: &str, e: ureq::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::HostNotFound => {
            Failure::Unreachable(unreachable_msg(url, "DNS lookup failed"))
        }
        ureq::Error::ConnectionFailed => {
            Failure::Unreachable(unreachable_msg(url, "connection failed"))
        }
        // std reports getaddrinfo failures with an uncategorised kind.
        ureq::Error::Io(io) if io.to_string().contains("failed to lookup address") => {
            Failure::Unreachable(unreachable_msg(url, "DNS lookup failed"))
        }
        ureq::Error::Io(io) => match io.kind() {
            K::ConnectionRefused
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
            | K::NotFound => Failure::Unreachable(unreachable_msg(url, io)),
            // Lost mid-way: worth another (resuming) try.
            _ => Failure::Interrupted(anyhow!("request to {url} failed: {io}")),
        },
        ureq::Error::Timeout(t @ (ureq::Timeout::Connect | ureq::Timeout::Resolve)) => {
            Failure::Unreachable(unreachable_msg(url, format!("timed out ({t})")))
        }
        ureq::Error::Timeout(t) => {
            Failure::Interrupted(anyhow!("request to {url} timed out ({t})"))
        }
        other => Failure::Fatal(anyhow!("request to {url} failed: {other}")),
    }
}

/// Downloads `url` to `part` (resuming what `part` already holds), then renames it to `dest`.
/// On failure the `.part` file is kept so that the next run can resume.
pub fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    dest: &Path,
    opts: &Options,
) -> Result<()> {
    let name = dest.file_name().map_or_else(
        || dest.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut attempt = 0u32;
    loop {
        match try_once(agent, url, part, &name, opts) {
            Ok(()) => break,
            Err(Failure::Unreachable(e)) | Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Interrupted(e)) => {
                if attempt >= opts.retries {
                    return Err(e.context(format!(
                        "giving up on {url} after {} attempts; the partial file {} is kept and \
                         the next run resumes it",
                        attempt + 1,
                        part.display()
                    )));
                }
                attempt += 1;
                tracing::warn!("{e:#}; retrying ({attempt}/{})", opts.retries);
                std::thread::sleep(opts.retry_delay);
            }
        }
    }
    std::fs::rename(part, dest)
        .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
    Ok(())
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

fn try_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    name: &str,
    opts: &Options,
) -> Result<(), Failure> {
    let fatal = |e: anyhow::Error| Failure::Fatal(e);
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
        tracing::info!("resuming {name} from byte {have} ({url})");
    } else {
        tracing::info!("downloading {name} from {url}");
    }
    let resp = req.call().map_err(|e| classify(url, e))?;
    let status = resp.status().as_u16();
    if let Some(enc) = header(&resp, "content-encoding") {
        if !enc.eq_ignore_ascii_case("identity") {
            tracing::warn!("{url} is sent with Content-Encoding `{enc}`; the saved bytes may differ from the archive");
        }
    }
    let length = header(&resp, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    // (offset where the body starts, expected total size)
    let (offset, total) = match status {
        206 => {
            let Some((start, _end, total)) =
                header(&resp, "content-range").and_then(parse_content_range)
            else {
                let _ = std::fs::remove_file(part);
                return Err(Failure::Interrupted(anyhow!(
                    "{url} answered 206 without a valid Content-Range; restarting from scratch"
                )));
            };
            if start != have {
                let _ = std::fs::remove_file(part);
                return Err(Failure::Interrupted(anyhow!(
                    "{url} sent bytes from {start} instead of {have}; restarting from scratch"
                )));
            }
            (start, total.or(length.map(|l| start + l)))
        }
        200 => {
            if have > 0 {
                tracing::info!("{} does not support resuming (HTTP 200 to a Range request): restarting {name} from scratch", host_of(url));
            }
            (0, length)
        }
        416 => {
            // Our partial file is not a prefix the server recognises (e.g. it changed).
            let _ = std::fs::remove_file(part);
            return Err(Failure::Interrupted(anyhow!(
                "{url} refused to resume at byte {have} (HTTP 416); restarting from scratch"
            )));
        }
        s => {
            return Err(Failure::Fatal(anyhow!(
                "{url} answered HTTP {s}{}",
                resp.status()
                    .canonical_reason()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )))
        }
    };

    let mut file = if offset == 0 {
        File::create(part)
    } else {
        OpenOptions::new().append(true).open(part)
    }
    .with_context(|| format!("cannot write {}", part.display()))
    .map_err(fatal)?;

    let bar = progress_bar(opts.progress, name, total, offset);
    let mut body = resp.into_body().into_with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = offset;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                bar.abandon();
                return Err(Failure::Interrupted(anyhow!(
                    "download of {url} broke off after {pos} bytes: {e}"
                )));
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", part.display()))
            .map_err(fatal)?;
        pos += n as u64;
        bar.set_position(pos);
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", part.display()))
        .map_err(fatal)?;
    bar.finish_and_clear();
    if let Some(t) = total {
        if pos != t {
            return Err(Failure::Interrupted(anyhow!(
                "connection to {url} closed after {pos} of {t} bytes"
            )));
        }
    }
    tracing::info!("downloaded {name} ({pos} bytes)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, 99, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, 99, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    #[test]
    fn host_extraction() {
        assert_eq!(
            host_of("http://www2.imm.dtu.dk/~aam/x.zip"),
            "www2.imm.dtu.dk"
        );
        assert_eq!(host_of("http://127.0.0.1:8080/a"), "127.0.0.1:8080");
        assert_eq!(host_of("https://u:p@example.org?q"), "example.org");
    }
}
