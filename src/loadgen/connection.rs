//! One keep-alive HTTP/1.1 connection from a load-tool client to the sidecar, as each client of
//! the integration hub would hold one. The load tool shares the machine's two cores with the
//! sidecar, so what it spends on a request is taken from the sidecar: a pooled `reqwest` client
//! (URL parsing, header maps, a pool checkout per request) cost about 22 us of CPU a request,
//! more than the sidecar's own parsing and validation. A request here is written straight onto
//! the client's own connection with hyper.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// `host:port`, for the `Host` header.
    authority: String,
}

impl Connection {
    /// Connects to the sidecar at `url` (`http://host:port`).
    pub async fn open(url: &str) -> anyhow::Result<Connection> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        if parsed.scheme() != "http" {
            bail!("the load tool speaks plain HTTP to the sidecar; {url} is not http://");
        }
        let host = parsed
            .host_str()
            .with_context(|| format!("{url} names no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection until the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, authority })
    }

    /// Posts `body` to `path` and reads the whole answer; returns its status.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<StatusCode> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}
