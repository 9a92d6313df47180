//! A fault-injecting reverse proxy in front of Azurite. adlsfs (and azcopy, through the
//! URLs it is given) use it as the storage endpoint; rules decide, request by request,
//! whether to forward faithfully or to break the exchange in one of the ways real
//! networks and services do. One request per connection (`Connection: close`), so a
//! fault never spills into another request.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds when given) instead of forwarding.
    Status(u16, Option<u32>),
    /// Forward, then reset the connection halfway through the response body.
    ResetMidBody,
    /// Forward, then close the connection before the body is complete.
    CutShort,
    /// Wait this long before sending the response.
    DelayFirstByte(Duration),
    /// Send the response in 16 KiB pieces, this long apart.
    Trickle(Duration),
    /// Send the response head, then nothing, ever.
    Stall,
    /// Forward (so the request takes effect), then reset the connection without sending
    /// any of the answer: a write that landed but whose answer was lost.
    DropAnswer,
    /// Forward, with one byte in the middle of the body inverted and the headers kept: a
    /// flip in transit that no transport check sees (plain HTTP).
    FlipByte,
    /// Run this before forwarding (e.g. overwrite the blob between two ranged GETs).
    Before(Arc<dyn Fn() + Send + Sync>),
}

struct Rule {
    method: String,
    path_contains: String,
    /// Only requests carrying a Range header (the fetchers' GETs, not listings).
    ranged_only: bool,
    fault: Fault,
    remaining: usize,
}

#[derive(Clone, Default)]
pub struct Rules(
    Arc<Mutex<Vec<Rule>>>,
    Arc<Mutex<u32>>,
    Arc<std::sync::atomic::AtomicUsize>,
);

/// Faults drawn at random in chaos mode: all recoverable by retrying.
fn random_fault() -> Fault {
    match fastrand::u32(0..5) {
        0 => Fault::ResetMidBody,
        1 => Fault::CutShort,
        2 => Fault::Status(503, Some(0)),
        3 => Fault::Status(500, None),
        _ => Fault::DelayFirstByte(Duration::from_millis(200)),
    }
}

pub struct FaultProxy {
    pub port: u16,
    rules: Rules,
    /// Request lines seen, in order ("GET /devstoreaccount1/c/b?...").
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Each forwarded answer's request line and the body bytes sent of it.
    sent: Sent,
}

type Sent = Arc<Mutex<Vec<(String, usize)>>>;

impl FaultProxy {
    /// Starts the proxy on a free port, forwarding to Azurite on `upstream`.
    pub fn start(upstream: u16) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let rules = Rules::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Sent::default();
        let (r, s, b) = (rules.clone(), Arc::clone(&seen), Arc::clone(&sent));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let (r, s, b) = (r.clone(), Arc::clone(&s), Arc::clone(&b));
                    tokio::spawn(async move {
                        let _ = serve(client, upstream, r, s, b).await;
                    });
                }
            });
        });
        Self {
            port,
            rules,
            seen,
            sent,
        }
    }

    pub fn endpoint(&self) -> url::Url {
        url::Url::parse(&format!("http://127.0.0.1:{}/devstoreaccount1", self.port)).unwrap()
    }

    /// Applies `fault` to the next `times` requests with this method whose path contains
    /// `path_contains` (and that ask for a byte range when `ranged_only`).
    pub fn add(
        &self,
        method: &str,
        path_contains: &str,
        ranged_only: bool,
        fault: Fault,
        times: usize,
    ) {
        self.rules.0.lock().unwrap().push(Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            ranged_only,
            fault,
            remaining: times,
        });
    }

    pub fn clear(&self) {
        self.rules.0.lock().unwrap().clear();
        *self.rules.1.lock().unwrap() = 0;
    }

    /// Breaks this percentage of ranged GETs (not matched by a rule) with a random
    /// recoverable fault.
    pub fn chaos(&self, percent: u32) {
        *self.rules.1.lock().unwrap() = percent;
    }

    /// Faults injected by chaos mode so far.
    pub fn chaos_injected(&self) -> usize {
        self.rules.2.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests seen whose line contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Response body bytes sent for the requests whose line contains `needle`.
    pub fn bytes_served(&self, needle: &str) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.contains(needle))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: u16,
    rules: Rules,
    seen: Arc<Mutex<Vec<String>>>,
    sent: Sent,
) -> std::io::Result<()> {
    // The request head, then as much body as Content-Length says.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let content_length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + content_length {
        let mut chunk = vec![0u8; 65536];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.lines().next().unwrap_or("").to_string();
    seen.lock().unwrap().push(request_line.clone());
    let method = request_line.split(' ').next().unwrap_or("");
    let path = request_line.split(' ').nth(1).unwrap_or("");
    let ranged = head.to_ascii_lowercase().contains("\r\nrange:")
        || head.to_ascii_lowercase().contains("\r\nx-ms-range:");
    let percent = *rules.1.lock().unwrap();
    let injected = Arc::clone(&rules.2);
    let fault = {
        let mut rules = rules.0.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                r.remaining > 0
                    && r.method == method
                    && path.contains(&r.path_contains)
                    && (!r.ranged_only || ranged)
            })
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            })
            .or_else(|| {
                let hit = ranged && method == "GET" && fastrand::u32(0..100) < percent;
                if hit {
                    injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                hit.then(random_fault)
            })
    };
    if let Some(Fault::Status(status, retry_after)) = &fault {
        let retry = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let body = "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>injected</Message></Error>";
        let response = format!(
            "HTTP/1.1 {status} Injected\r\n{retry}x-ms-error-code: ServerBusy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    if let Some(Fault::Before(hook)) = &fault {
        let hook = Arc::clone(hook);
        tokio::task::spawn_blocking(move || hook()).await.unwrap();
    }
    // Forward with Connection: close, read the whole response.
    let mut forwarded = String::new();
    for line in head[..head_end - 4].split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(forwarded.as_bytes()).await?;
    up.write_all(&buf[head_end..]).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let body_start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let body = response.len() - body_start;
    let sent_body = match fault {
        Some(Fault::Stall | Fault::DropAnswer) => 0,
        Some(Fault::CutShort | Fault::ResetMidBody) => body / 2,
        _ => body,
    };
    sent.lock().unwrap().push((request_line, sent_body));
    match fault {
        None | Some(Fault::Before(_)) | Some(Fault::Status(..)) => {
            client.write_all(&response).await?
        }
        Some(Fault::DelayFirstByte(d)) => {
            tokio::time::sleep(d).await;
            client.write_all(&response).await?;
        }
        Some(Fault::Trickle(d)) => {
            for piece in response.chunks(16 << 10) {
                client.write_all(piece).await?;
                tokio::time::sleep(d).await;
            }
        }
        Some(Fault::Stall) => {
            client.write_all(&response[..body_start]).await?;
            std::future::pending::<()>().await;
        }
        Some(Fault::CutShort) => {
            let cut = body_start + (response.len() - body_start) / 2;
            client.write_all(&response[..cut]).await?;
            client.shutdown().await?;
        }
        Some(Fault::DropAnswer) => {
            client.set_zero_linger()?;
            drop(client);
        }
        Some(Fault::FlipByte) => {
            let middle = body_start + (response.len() - body_start) / 2;
            if let Some(b) = response.get_mut(middle) {
                *b = !*b;
            }
            client.write_all(&response).await?;
        }
        Some(Fault::ResetMidBody) => {
            let cut = body_start + (response.len() - body_start) / 2;
            client.write_all(&response[..cut]).await?;
            client.set_zero_linger()?;
            drop(client); // RST, not FIN
        }
    }
    Ok(())
}
