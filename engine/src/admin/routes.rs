//! What each admin URL answers. The HTTP loop parses; this decides.

use serde_json::{json, Value};

use super::{exposition, limits, AdminShared, Stat};
use crate::control::{ControlError, Health, HealthKind};
use crate::message::ConnectionId;

/// A parsed request.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) body: Vec<u8>,
}

/// An answer: status, content type, body.
pub(super) struct Response {
    pub(super) status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// The methods the path takes (405's `Allow`).
    allow: Option<&'static str>,
}

/// The content type of the Prometheus text format `prometheus-client` writes (OpenMetrics
/// 1.0, which Prometheus negotiates and parses).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            allow: None,
        }
    }

    fn json(status: u16, value: &Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Self::new(status, JSON, body)
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }

    pub(super) fn bad_request(message: &str) -> Self {
        Self::error(400, message)
    }

    pub(super) fn too_large(limit_bytes: usize) -> Self {
        Self::error(
            413,
            &format!("request over {limit_bytes} bytes ([admin] max_request_bytes)"),
        )
    }

    pub(super) fn too_many_headers(limit: usize) -> Self {
        Self::error(
            431,
            &format!("more than {limit} header lines ([admin] max_headers)"),
        )
    }

    pub(super) fn unavailable(message: &str) -> Self {
        Self::error(503, message)
    }

    pub(super) fn length_required() -> Self {
        Self::error(
            411,
            "send the body with a Content-Length (no chunked bodies)",
        )
    }

    fn not_found(path: &str) -> Self {
        Self::error(
            404,
            &format!("no such path {path:?}; see docs/OPERATING.md"),
        )
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::error(405, &format!("this path takes {allow}"))
        }
    }

    /// Which counter this answer goes to.
    pub(super) fn stat(&self) -> Stat {
        match self.status {
            200..=299 => Stat::Ok,
            400 | 411 => Stat::BadRequest,
            404 => Stat::NotFound,
            405 => Stat::MethodNotAllowed,
            413 => Stat::TooLarge,
            422 => Stat::Invalid,
            431 => Stat::TooManyHeaders,
            _ => Stat::Unavailable,
        }
    }

    /// Appends the answer, head and body, to `out`.
    pub(super) fn write_to(&self, out: &mut Vec<u8>, close: bool) {
        use http::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
        use std::io::Write;
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("");
        let length = self.body.len().to_string();
        let headers = [
            (CONTENT_TYPE, Some(self.content_type)),
            (CONTENT_LENGTH, Some(length.as_str())),
            (CACHE_CONTROL, Some("no-store")),
            (ALLOW, self.allow),
            (CONNECTION, close.then_some("close")),
        ];
        // Writing to a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in headers {
            if let Some(value) = value {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// The answer to `request`.
pub(super) fn answer(shared: &AdminShared, request: &Request) -> Response {
    let method = request.method.as_str();
    match request.path.as_str() {
        "/metrics" => match method {
            "GET" => Response::new(200, OPENMETRICS, exposition::encode(shared).into_bytes()),
            _ => Response::method_not_allowed("GET"),
        },
        "/health" => match method {
            "GET" => health(shared, HealthKind::Full),
            _ => Response::method_not_allowed("GET"),
        },
        "/ready" => match method {
            "GET" => health(shared, HealthKind::Readiness),
            _ => Response::method_not_allowed("GET"),
        },
        "/drain" => match method {
            "POST" => drain(shared, &request.query),
            _ => Response::method_not_allowed("POST"),
        },
        "/breaker/open" | "/breaker/close" | "/breaker/auto" => match method {
            "POST" => breaker(shared, &request.path),
            _ => Response::method_not_allowed("POST"),
        },
        "/config" => match method {
            "GET" => {
                let config = shared
                    .config
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match serde_json::to_value(&*config) {
                    Ok(value) => Response::json(200, &value),
                    Err(error) => Response::error(500, &error.to_string()),
                }
            }
            _ => Response::method_not_allowed("GET"),
        },
        "/limits" => match method {
            "PUT" => put_limits(shared, &request.body),
            _ => Response::method_not_allowed("PUT"),
        },
        "/reload" => match method {
            "POST" => match shared.reload() {
                Some(Ok(applied)) => Response::json(200, &json!({ "reloaded": applied })),
                Some(Err(error)) => Response::error(422, &error),
                None => Response::error(501, "this program has no configuration file to reload"),
            },
            _ => Response::method_not_allowed("POST"),
        },
        path => Response::not_found(path),
    }
}

/// The health check a request asks for, if it is one (`GET /health` or `GET /ready`): the
/// HTTP loop has the control thread serve those itself.
pub(super) fn health_kind(request: &Request) -> Option<HealthKind> {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/health") => Some(HealthKind::Full),
        ("GET", "/ready") => Some(HealthKind::Readiness),
        _ => None,
    }
}

/// `/health` (full check: 200 when live) and `/ready` (readiness: 200 when ready and not
/// taken out by a drain or a stop).
fn health(shared: &AdminShared, kind: HealthKind) -> Response {
    health_response(shared, kind, shared.control.health(kind))
}

/// The answer to a health check of `kind` that ended in `result`.
pub(super) fn health_response(
    shared: &AdminShared,
    kind: HealthKind,
    result: Result<Health, ControlError>,
) -> Response {
    match result {
        Ok(health) => {
            let taken_out = shared.not_ready();
            let ok = match kind {
                HealthKind::Readiness => health.ready && !taken_out,
                _ => health.live,
            };
            let mut body = health_json(&health);
            body["taken_out"] = json!(taken_out);
            Response::json(if ok { 200 } else { 503 }, &body)
        }
        Err(error) => Response::error(503, &error.to_string()),
    }
}

fn health_json(health: &Health) -> Value {
    json!({
        "live": health.live,
        "ready": health.ready,
        "lost_shards": health.lost_shards,
        "breaker": health.breaker.name(),
        "alert_level": format!("{:?}", health.alert_level).to_lowercase(),
        "degraded": health.degraded,
        "global": health.global.iter().map(|quota| json!({
            "tenant": quota.tenant.0,
            "mode": quota.mode.name(),
            "share_per_sec": quota.share_per_sec,
            "pending_share": quota.pending_share,
        })).collect::<Vec<_>>(),
        "shards": health.shards.iter().map(|shard| json!({
            "shard": shard.shard,
            "pending_messages": shard.pending_messages,
            "connections": shard.connections,
            "backpressure": shard.backpressure,
            "lost": shard.lost,
            "workers": shard.workers.map(|workers| json!({
                "open": workers.open,
                "credit_free": workers.credit_free,
                "credit_total": workers.credit_total,
                "answers": workers.answers,
                "answer_latency_ns_mean": workers.answer_latency_ns_mean,
                "answer_latency_ns_max": workers.answer_latency_ns_max,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// `POST /drain`: the process stops being ready; `?connection=ID` drains one connection.
fn drain(shared: &AdminShared, query: &str) -> Response {
    let connection = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("connection="));
    match connection {
        None if query.is_empty() => {
            // Relaxed: see `AdminShared::not_ready`.
            shared
                .not_ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(target: "spillway::admin", "drain: readiness answers 503 from now on");
            Response::json(200, &json!({ "ready": false }))
        }
        None => Response::bad_request("the only query is connection=ID"),
        Some(id) => match id.parse::<u64>() {
            Ok(id) => match shared.control.drain(ConnectionId(id)) {
                Ok(report) => Response::json(
                    200,
                    &json!({
                        "connection": report.connection.0,
                        "finished": report.finished,
                        "cancelled": report.cancelled,
                        "deadline_passed": report.deadline_passed,
                    }),
                ),
                Err(error) => Response::error(500, &error.to_string()),
            },
            Err(_) => Response::bad_request(&format!("connection={id:?}: not a connection id")),
        },
    }
}

fn breaker(shared: &AdminShared, path: &str) -> Response {
    let result = match path {
        "/breaker/open" => shared.control.force_open(),
        "/breaker/close" => shared.control.force_closed(),
        _ => shared.control.reset(),
    };
    match result {
        Ok(()) => {
            tracing::info!(target: "spillway::admin", path, "breaker set by the admin endpoint");
            Response::json(
                200,
                &json!({ "breaker": shared.control.breaker_state().name() }),
            )
        }
        Err(error) => Response::error(500, &error.to_string()),
    }
}

fn put_limits(shared: &AdminShared, body: &[u8]) -> Response {
    let request: limits::LimitsRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return Response::bad_request(&format!("limits: {error}")),
    };
    let mut config = shared
        .config
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match limits::apply(&shared.control, &mut config, &request) {
        Ok(applied) => Response::json(200, &applied),
        Err(limits::LimitsError::Invalid(error)) => Response::error(422, &error),
        Err(error @ limits::LimitsError::Control { .. }) => {
            Response::error(500, &error.to_string())
        }
    }
}
