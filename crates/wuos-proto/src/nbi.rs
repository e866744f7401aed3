//! A client of the SD-WAN controller's northbound interface (REST, docs/sdwan.md): JSON over
//! HTTP/1.1 with the bearer token, on a TCP stream the caller opened — to an address, or inside
//! a lab router's namespace (the NBI listens on the controller router's loopback).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NbiError {
    #[error("cannot reach the SD-WAN NBI at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the SD-WAN NBI connection: {0}")]
    Http(String),
    /// The NBI refused the request: its status, error code and message.
    #[error("{message} ({status}, {code})")]
    Refused { status: u16, code: String, message: String },
}

/// One HTTP/1.1 connection to the NBI.
pub struct NbiClient {
    sender: SendRequest<Full<Bytes>>,
    token: String,
    host: String,
}

impl std::fmt::Debug for NbiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbiClient")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl NbiClient {
    /// Connects to `addr` (HOST:PORT).
    pub async fn connect(addr: &str, token: &str) -> Result<NbiClient, NbiError> {
        let connect = tokio::time::timeout(crate::CONNECT_TIMEOUT, TcpStream::connect(addr));
        let stream = match connect.await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(NbiError::Connect {
                    addr: addr.into(),
                    source,
                });
            }
            Err(_) => {
                return Err(NbiError::Connect {
                    addr: addr.into(),
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        };
        NbiClient::over(stream, addr, token).await
    }

    /// Speaks to the NBI over `stream`, already connected to `host`.
    pub async fn over(stream: TcpStream, host: &str, token: &str) -> Result<NbiClient, NbiError> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| NbiError::Http(e.to_string()))?;
        tokio::spawn(conn);
        Ok(NbiClient {
            sender,
            token: token.trim().to_string(),
            host: host.to_string(),
        })
    }

    /// `method path` with `body` (JSON); the answer's JSON, or the NBI's refusal.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, NbiError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token));
        let bytes = match body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| NbiError::Http(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| NbiError::Http(e.to_string()))?;
        self.sender.ready().await.map_err(|e| NbiError::Http(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| NbiError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| NbiError::Http(e.to_string()))?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({"error": "invalid", "message": String::from_utf8_lossy(&bytes)}));
        if status == StatusCode::OK {
            Ok(v)
        } else {
            Err(NbiError::Refused {
                status: status.as_u16(),
                code: v["error"].as_str().unwrap_or("unknown").to_string(),
                message: v["message"].as_str().unwrap_or_default().to_string(),
            })
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<serde_json::Value, NbiError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, NbiError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&mut self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, NbiError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<serde_json::Value, NbiError> {
        self.call(Method::DELETE, path, None).await
    }

    /// Waits until every edge holds generation `generation` (`/v1/status`: each edge in sync),
    /// polling every `every`, for at most `timeout`; the last status, or the edges still out of
    /// sync with their errors.
    pub async fn wait_synced(
        &mut self,
        generation: u64,
        every: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.get("/v1/status").await.map_err(|e| e.to_string())?;
            let behind: Vec<String> = s["edges"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, e)| !(e["in_sync"] == true && e["synced_generation"].as_u64() >= Some(generation)))
                .map(|(n, e)| match e["error"].as_str() {
                    Some(err) => format!("{n}: {err}"),
                    None => format!("{n}: {} piece(s) pending", e["pending"]),
                })
                .collect();
            if behind.is_empty() {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "edges not holding generation {generation} after {:?}: {}",
                    timeout,
                    behind.join("; ")
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl wuos_model::Classify for NbiError {
    fn class(&self) -> wuos_model::ErrorClass {
        use wuos_model::ErrorClass;
        match self {
            NbiError::Connect { .. } => ErrorClass::Unavailable,
            NbiError::Http(_) => ErrorClass::Internal,
            NbiError::Refused { status, .. } => match status {
                400 | 401 => ErrorClass::BadInput,
                404 => ErrorClass::NotFound,
                409 => ErrorClass::Conflict,
                503 => ErrorClass::Unavailable,
                _ => ErrorClass::Internal,
            },
        }
    }
}
