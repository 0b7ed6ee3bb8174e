//! The HTTP edge (axum routes on hyper/1.1 connections): the key-value API
//! under `/v1`, admin calls, `/healthz`, `/readyz` and `/metrics`. The API is
//! described in `docs/openapi.yaml`; this module and that file change
//! together.
//!
//! Keys in paths and query strings are percent-encoded bytes (decoded
//! without a UTF-8 detour, so any byte string is a key). In JSON, keys and
//! values that are valid UTF-8 travel as strings (`key`, `value`), others as
//! base64 (`key_b64`, `value_b64`). Errors are JSON,
//! `{"error": {"code": "...", "message": "..."}}`, with stable codes; the
//! mapping from crate errors to status codes is [`ApiError::from`].
//!
//! Every shard thread accepts on the same port (SO_REUSEPORT) and serves its
//! connections itself. During start-up, before every shard has recovered, a
//! responder on its own thread answers on the same listeners: `/healthz`
//! 200, `/readyz` and everything else 503 (see [`HttpState::recovering`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::BodyExt as _;
use percent_encoding::percent_decode;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tokio::sync::{mpsc, watch};

use crate::api::Limits;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::metrics;
use crate::shard::Router;
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;
use crate::storage::{Batch, Condition, Op, Outcome};

/// How often `/v1/txn` re-reads and retries when a compared key changed
/// between its read and its commit, before answering 409.
const TXN_ATTEMPTS: usize = 16;
/// A listing is sent in chunks of about this many bytes.
const LIST_CHUNK: usize = 64 << 10;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState(Arc<Inner>);

struct Inner {
    router: Option<Arc<Router>>,
    coord: Option<Arc<crate::txn::Coordinator>>,
    request_timeout: Duration,
    token: Option<crate::api::security::Secret>,
    limits: Limits,
    max_body: usize,
    io_engine: &'static str,
    sync: String,
}

impl HttpState {
    /// The state of a running daemon. `max_body` bounds JSON request bodies
    /// (`/v1/batch`, `/v1/txn`).
    pub fn ready(
        coord: Arc<crate::txn::Coordinator>,
        limits: Limits,
        max_body: usize,
        io_engine: &'static str,
        sync: String,
        request_timeout: Duration,
        token: Option<crate::api::security::Secret>,
    ) -> Self {
        HttpState(Arc::new(Inner {
            router: Some(coord.router().clone()),
            coord: Some(coord),
            request_timeout,
            token,
            limits,
            max_body,
            io_engine,
            sync,
        }))
    }

    /// The state while shards recover: every data endpoint answers 503.
    pub fn recovering(limits: Limits, request_timeout: Duration) -> Self {
        HttpState(Arc::new(Inner {
            router: None,
            coord: None,
            request_timeout,
            token: None,
            limits,
            max_body: 0,
            io_engine: "",
            sync: String::new(),
        }))
    }

    fn coord(&self) -> std::result::Result<&Arc<crate::txn::Coordinator>, ApiError> {
        self.0.coord.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "recovering",
                "the daemon is recovering its data; retry shortly",
            )
        })
    }

    fn router(&self) -> std::result::Result<&Arc<Router>, ApiError> {
        self.0.router.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "recovering",
                "the daemon is recovering its data; retry shortly",
            )
        })
    }
}

/// An error reply: status, stable code, message, optional extra fields.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Json>,
}

/// The error code of a response, for the metrics middleware.
#[derive(Clone, Copy)]
struct ErrorTag(&'static str);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    fn with(mut self, field: &str, value: Json) -> Self {
        self.extra.insert(field.into(), value);
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match e.code() {
            ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ErrorCode::Io if e.is_disk_full() => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            ErrorCode::Io | ErrorCode::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ErrorCode::Poisoned => (StatusCode::SERVICE_UNAVAILABLE, "poisoned"),
            ErrorCode::Corruption => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
            ErrorCode::Locked | ErrorCode::Config => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ErrorCode::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        let mut r = (self.status, axum::Json(json!({ "error": error }))).into_response();
        r.extensions_mut().insert(ErrorTag(self.code));
        r
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The routes, over `state`.
pub fn app(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/v1/kv", get(kv_list))
        .route("/v1/kv/", get(kv_empty).put(kv_empty).delete(kv_empty))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/batch", post(batch))
        .route("/v1/txn", post(txn))
        .route("/v1/stats", get(stats))
        .route("/v1/admin/compact", post(compact))
        .route("/v1/admin/checkpoint", post(checkpoint))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts and times every request under its method and route pattern, and
/// answers 503 `timeout` when it runs past the request deadline.
async fn track(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    let command = match req.extensions().get::<MatchedPath>() {
        Some(p) => format!("{method} {}", p.as_str()),
        None => format!("{method} unmatched"),
    };
    let open = matches!(req.uri().path(), "/healthz" | "/readyz");
    if let (Some(token), false) = (&st.0.token, open) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !token.matches_bearer(given) {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing or wrong token: send 'Authorization: Bearer <token>'",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            metrics().request("http", &command, start, Some("unauthenticated"));
            return r;
        }
    }
    let deadline = st.0.request_timeout;
    let resp = match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request did not finish within {} ms (--request-timeout-ms)",
                deadline.as_millis()
            ),
        )
        .into_response(),
    };
    let error = resp.extensions().get::<ErrorTag>().map(|t| t.0);
    metrics().request("http", &command, start, error);
    resp
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        format!("no endpoint {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

fn check_key(key: &[u8], limits: &Limits) -> ApiResult<()> {
    Ok(limits.check_key(key)?)
}

/// The precondition of a write with an optional expected version.
fn version_condition(key: &[u8], expected: Option<u64>) -> Vec<Condition> {
    expected
        .map(|v| Condition {
            key: key.to_vec(),
            expected_version: v,
        })
        .into_iter()
        .collect()
}

/// The key of a `/v1/kv/{key}` path, percent-decoded to bytes.
fn path_key(uri: &Uri, limits: &Limits) -> ApiResult<Vec<u8>> {
    let raw = uri.path().strip_prefix("/v1/kv/").unwrap_or_default();
    let key: Vec<u8> = percent_decode(raw.as_bytes()).collect();
    check_key(&key, limits)?;
    Ok(key)
}

/// `key` for messages: as text when it is UTF-8, else base64.
fn show(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("(base64) {}", B64.encode(key)),
    }
}

/// Adds `name` (UTF-8) or `name_b64` to a JSON object.
fn put_bytes(obj: &mut Map<String, Json>, name: &str, bytes: Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(s) => {
            obj.insert(name.into(), s.into());
        }
        Err(e) => {
            obj.insert(format!("{name}_b64"), B64.encode(e.into_bytes()).into());
        }
    }
}

/// Query parameters as (name, bytes); `+` is a space, `%2B` a plus.
fn query(uri: &Uri, allowed: &[&str]) -> ApiResult<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| -> Vec<u8> { percent_decode(s.replace('+', " ").as_bytes()).collect() };
        let name = String::from_utf8_lossy(&decode(name)).into_owned();
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown query parameter {name:?} (this endpoint takes: {})",
                allowed.join(", ")
            )));
        }
        out.push((name, decode(value)));
    }
    Ok(out)
}

fn parse_u64(name: &str, v: &[u8]) -> ApiResult<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad(format!("{name} must be a non-negative integer")))
}

fn parse_bool(name: &str, v: &[u8]) -> ApiResult<bool> {
    match v {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(ApiError::bad(format!("{name} must be true or false"))),
    }
}

/// A version from `If-Match` (`"12"`, `12` or `W/"12"`).
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let mut expected = None;
    if let Some(v) = headers.get(header::IF_MATCH) {
        let s = v.to_str().unwrap_or_default().trim();
        let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
        expected = Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad("If-Match takes the version of the key (its ETag), e.g. If-Match: \"12\"")
        })?);
    }
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        if v.as_bytes().trim_ascii() != b"*" {
            return Err(ApiError::bad(
                "If-None-Match takes only * (create the key only if it is absent)",
            ));
        }
        // Both must hold (RFC 9110): "at version N" and "absent" agree
        // only for N = 0.
        if expected.is_some_and(|v| v != 0) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "If-Match with a version and If-None-Match: * cannot both hold",
            ));
        }
        expected = Some(0);
    }
    Ok(expected)
}

fn mismatch(key: &[u8], current: u64, expected: u64) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
        format!(
            "key {} is at version {current}, expected {expected}{}",
            show(key),
            if current == 0 { " (0 = absent)" } else { "" }
        ),
    )
    .with("current_version", current.into())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Err(e) => Err(ApiError::bad(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

async fn kv_empty() -> ApiError {
    ApiError::bad("key must not be empty")
}

async fn kv_get(State(st): State<HttpState>, uri: Uri) -> ApiResult<Response> {
    let router = st.router()?;
    query(&uri, &[])?;
    let key = path_key(&uri, &st.0.limits)?;
    let Some(v) = router.get(&key)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("key {} not found", show(&key)),
        ));
    };
    let mut r = Response::new(Body::from(v.value));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ETAG, etag(v.version));
    h.insert("x-flashkv-version", v.version.into());
    h.insert("x-flashkv-shard", router.shard_of(&key).into());
    if let Some(t) = v.expires_at_ms {
        h.insert("x-flashkv-ttl-ms", t.saturating_sub(now_ms()).max(1).into());
    }
    Ok(r)
}

fn written(status: StatusCode, version: u64, body: Json) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(header::ETAG, etag(version));
    r
}

async fn kv_put(
    State(st): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let router = st.router()?;
    let key = path_key(&uri, &st.0.limits)?;
    let mut ttl_ms = 0;
    for (name, v) in query(&uri, &["ttl_ms"])? {
        if name == "ttl_ms" {
            ttl_ms = parse_u64("ttl_ms", &v)?;
        }
    }
    let expected = if_match(&headers)?;
    let value = read_body(&headers, body, st.0.limits.max_value_size).await?;
    let mut batch = Batch {
        ops: vec![Op::Put {
            key: key.clone(),
            value: value.into(),
            expires_at_ms: (ttl_ms > 0).then(|| now_ms().saturating_add(ttl_ms)),
        }],
        conditions: version_condition(&key, expected),
    };
    crate::keyspace::replace_collections(&mut batch.ops);
    match router.write(batch).await? {
        Outcome::Committed { version, .. } => Ok(written(
            StatusCode::OK,
            version,
            json!({ "version": version }),
        )),
        Outcome::ConditionFailed {
            key,
            current_version,
        } => Err(mismatch(
            &key,
            current_version,
            expected.unwrap_or_default(),
        )),
    }
}

async fn kv_delete(
    State(st): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let router = st.router()?;
    query(&uri, &[])?;
    let key = path_key(&uri, &st.0.limits)?;
    let expected = if_match(&headers)?;
    let mut batch = Batch {
        ops: vec![Op::Delete { key: key.clone() }],
        conditions: version_condition(&key, expected),
    };
    crate::keyspace::replace_collections(&mut batch.ops);
    match router.write(batch).await? {
        Outcome::Committed { removed: 0, .. } => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("key {} not found", show(&key)),
        )),
        Outcome::Committed { version, .. } => Ok(written(
            StatusCode::OK,
            version,
            json!({ "found": true, "version": version }),
        )),
        Outcome::ConditionFailed {
            key,
            current_version,
        } => Err(mismatch(
            &key,
            current_version,
            expected.unwrap_or_default(),
        )),
    }
}

/// `GET /v1/kv`: a streamed JSON listing,
/// `{"items": [...], "count": n, "more": bool}` (and `"error"` if the scan
/// failed part-way, after the items sent so far).
async fn kv_list(State(st): State<HttpState>, uri: Uri) -> ApiResult<Response> {
    let router = st.router()?.clone();
    let (mut prefix, mut start, mut end) = (Vec::new(), Vec::new(), Vec::new());
    let (mut limit, mut reverse, mut keys_only) = (u64::MAX, false, false);
    for (name, v) in query(
        &uri,
        &["prefix", "start", "end", "limit", "reverse", "keys_only"],
    )? {
        match name.as_str() {
            "prefix" => prefix = v,
            "start" => start = v,
            "end" => end = v,
            "limit" => {
                limit = parse_u64("limit", &v)?;
                if limit == 0 {
                    limit = u64::MAX;
                }
            }
            "reverse" => reverse = parse_bool("reverse", &v)?,
            _ => keys_only = parse_bool("keys_only", &v)?,
        }
    }
    let (lower, upper) = scan_bounds(&start, &end, &prefix);
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let mut scan = router.scan(lower, upper, reverse, keys_only);
        let mut buf = String::from("{\"items\":[");
        let (mut count, mut more, mut failed) = (0u64, false, None);
        loop {
            match scan.next_item() {
                Ok(Some((key, v))) => {
                    if count == limit {
                        more = true;
                        break;
                    }
                    let mut item = Map::new();
                    put_bytes(&mut item, "key", key);
                    if !keys_only {
                        put_bytes(&mut item, "value", v.value);
                    }
                    item.insert("version".into(), v.version.into());
                    if let Some(t) = v.expires_at_ms {
                        item.insert("ttl_ms".into(), t.saturating_sub(now_ms()).max(1).into());
                    }
                    if count > 0 {
                        buf.push(',');
                    }
                    buf.push_str(&Json::Object(item).to_string());
                    count += 1;
                    if buf.len() >= LIST_CHUNK
                        && tx.send(Ok(std::mem::take(&mut buf).into())).await.is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(ApiError::from(e));
                    break;
                }
            }
        }
        buf.push_str(&format!("],\"count\":{count},\"more\":{more}"));
        if let Some(e) = failed {
            let err = json!({ "code": e.code, "message": e.message });
            buf.push_str(&format!(",\"error\":{err}"));
        }
        buf.push_str("}\n");
        let _ = tx.send(Ok(buf.into())).await;
    });
    let mut r = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// An optional JSON field that, when present, must not be `null`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One write in a JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    op: String,
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    key_b64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value_b64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    expected_version: Option<u64>,
}

/// Exactly one of `name` (UTF-8) and `name_b64`.
fn bytes_field(
    name: &str,
    text: Option<String>,
    b64: Option<String>,
) -> ApiResult<Option<Vec<u8>>> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(ApiError::bad(format!(
            "give {name} or {name}_b64, not both"
        ))),
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => B64
            .decode(b.as_bytes())
            .map(Some)
            .map_err(|e| ApiError::bad(format!("{name}_b64 is not valid base64: {e}"))),
        (None, None) => Ok(None),
    }
}

impl OpBody {
    /// The op and its optional version condition.
    fn into_op(self, limits: &Limits) -> ApiResult<(Op, Option<Condition>)> {
        let key = bytes_field("key", self.key, self.key_b64)?
            .ok_or_else(|| ApiError::bad("every op needs key or key_b64"))?;
        check_key(&key, limits)?;
        let value = bytes_field("value", self.value, self.value_b64)?;
        let cond = self.expected_version.map(|v| Condition {
            key: key.clone(),
            expected_version: v,
        });
        let op = match self.op.as_str() {
            "put" => {
                let value = value.ok_or_else(|| ApiError::bad("a put needs value or value_b64"))?;
                limits.check_value(&value)?;
                let ttl = self.ttl_ms.unwrap_or(0);
                Op::Put {
                    key,
                    value,
                    expires_at_ms: (ttl > 0).then(|| now_ms().saturating_add(ttl)),
                }
            }
            "delete" => {
                if value.is_some() || self.ttl_ms.is_some() {
                    return Err(ApiError::bad("a delete takes no value or ttl_ms"));
                }
                Op::Delete { key }
            }
            other => {
                return Err(ApiError::bad(format!(
                    "op must be \"put\" or \"delete\", not {other:?}"
                )));
            }
        };
        Ok((op, cond))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<OpBody>,
}

/// `POST /v1/batch`: puts and deletes applied atomically.
async fn batch(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let coord = st.coord()?;
    let body: BatchBody = json_body(&read_body(&headers, body, st.0.max_body).await?)?;
    if body.ops.is_empty() {
        return Err(ApiError::bad("a batch needs at least one op"));
    }
    let mut batch = Batch::default();
    let mut expected = Vec::new();
    for op in body.ops {
        let (op, cond) = op.into_op(&st.0.limits)?;
        if let Some(c) = cond {
            expected.push((c.key.clone(), c.expected_version));
            batch.conditions.push(c);
        }
        batch.ops.push(op);
    }
    crate::keyspace::replace_collections(&mut batch.ops);
    match coord.write_batch(batch).await? {
        Outcome::Committed { version, .. } => {
            Ok(axum::Json(json!({ "version": version })).into_response())
        }
        Outcome::ConditionFailed {
            key,
            current_version,
        } => {
            let exp = expected
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(0, |(_, v)| *v);
            Err(mismatch(&key, current_version, exp))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    key_b64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    version: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    value: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value_b64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    exists: Option<bool>,
}

enum Test {
    Version(u64),
    Value(Vec<u8>),
    Exists(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
}

fn branch(ops: Vec<OpBody>, limits: &Limits) -> ApiResult<Vec<Op>> {
    ops.into_iter()
        .map(|o| {
            if o.expected_version.is_some() {
                return Err(ApiError::bad(
                    "ops of a txn take no expected_version; put the condition in compare",
                ));
            }
            o.into_op(limits).map(|(op, _)| op)
        })
        .collect()
}

type ParsedTxn = (Vec<(Vec<u8>, Test)>, Vec<Op>, Vec<Op>);

/// Checks a txn body: comparisons, then both branches.
fn parse_txn(body: TxnBody, limits: &Limits) -> ApiResult<ParsedTxn> {
    let mut compares = Vec::with_capacity(body.compare.len());
    for c in body.compare {
        let key = bytes_field("key", c.key, c.key_b64)?
            .ok_or_else(|| ApiError::bad("every comparison needs key or key_b64"))?;
        check_key(&key, limits)?;
        let value = bytes_field("value", c.value, c.value_b64)?;
        let test = match (c.version, value, c.exists) {
            (Some(v), None, None) => Test::Version(v),
            (None, Some(v), None) => Test::Value(v),
            (None, None, Some(e)) => Test::Exists(e),
            _ => {
                return Err(ApiError::bad(
                    "a comparison takes exactly one of version, value (or value_b64), exists",
                ));
            }
        };
        compares.push((key, test));
    }
    let success = branch(body.success, limits)?;
    let failure = branch(body.failure, limits)?;
    if compares.is_empty() && success.is_empty() {
        return Err(ApiError::bad("a txn needs a comparison or an op"));
    }
    Ok((compares, success, failure))
}

/// `POST /v1/txn`: compare, then apply `success` if every comparison holds
/// and `failure` otherwise — atomically. The compared keys are read, and the
/// chosen writes commit on the condition that none of them changed since;
/// if one did, the transaction is evaluated again (409 after
/// [`TXN_ATTEMPTS`]).
async fn txn(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let coord = st.coord()?;
    let router = coord.router();
    let _open = metrics().transaction();
    let body: TxnBody = json_body(&read_body(&headers, body, st.0.max_body).await?)?;
    let (compares, success, failure) = parse_txn(body, &st.0.limits)?;
    for _ in 0..TXN_ATTEMPTS {
        let mut held = true;
        let mut conditions = Vec::with_capacity(compares.len());
        for (key, test) in &compares {
            let current = router.get(key)?;
            let version = current.as_ref().map_or(0, |v| v.version);
            held &= match test {
                Test::Version(v) => version == *v,
                Test::Value(want) => current.as_ref().is_some_and(|v| v.value == *want),
                Test::Exists(e) => current.is_some() == *e,
            };
            conditions.push(Condition {
                key: key.clone(),
                expected_version: version,
            });
        }
        let ops = if held { &success } else { &failure };
        if ops.is_empty() && compares.len() <= 1 {
            // One read is atomic by itself; nothing to write.
            return Ok(axum::Json(json!({ "succeeded": held, "version": null })).into_response());
        }
        let wrote = !ops.is_empty();
        let mut ops = ops.clone();
        crate::keyspace::replace_collections(&mut ops);
        match coord.write_batch(Batch { ops, conditions }).await? {
            Outcome::Committed { version, .. } => {
                let version = if wrote { json!(version) } else { Json::Null };
                return Ok(
                    axum::Json(json!({ "succeeded": held, "version": version })).into_response()
                );
            }
            Outcome::ConditionFailed { .. } => continue,
        }
    }
    metrics().abort("txn_conflict");
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "txn_conflict",
        format!("the compared keys kept changing; gave up after {TXN_ATTEMPTS} attempts (retry)"),
    ))
}

async fn stats(State(st): State<HttpState>) -> ApiResult<Response> {
    let router = st.router()?;
    let shards: Vec<Json> = router
        .stats()
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = serde_json::to_value(s).expect("stats serialize");
            if let Json::Object(m) = &mut v {
                m.insert("shard".into(), i.into());
            }
            v
        })
        .collect();
    Ok(axum::Json(json!({
        "io_engine": st.0.io_engine,
        "sync": st.0.sync,
        "shards": shards,
    }))
    .into_response())
}

async fn compact(State(st): State<HttpState>) -> ApiResult<Response> {
    let (merged, reclaimed) = st.router()?.compact().await?;
    Ok(
        axum::Json(json!({ "shards_merged": merged, "bytes_reclaimed": reclaimed }))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    path: String,
}

async fn checkpoint(
    State(st): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let router = st.router()?;
    let body: CheckpointBody = json_body(&read_body(&headers, body, 64 << 10).await?)?;
    router.checkpoint(std::path::Path::new(&body.path)).await?;
    Ok(axum::Json(json!({ "path": body.path })).into_response())
}

/// Liveness: 200 while the daemon works (or recovers); 503 with status
/// `failing` once a shard refuses writes until restart (a failed
/// fdatasync, its files deleted), since a restart is what recovers it.
async fn healthz(State(st): State<HttpState>) -> Response {
    let Some(router) = st.0.router.as_ref() else {
        return axum::Json(json!({ "status": "recovering" })).into_response();
    };
    let refusing = router.refusing_writes();
    if refusing.is_empty() {
        return axum::Json(json!({ "status": "ok" })).into_response();
    }
    let shards: Vec<Json> = refusing
        .into_iter()
        .map(|(shard, cause)| json!({ "shard": shard, "cause": cause }))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "status": "failing", "refusing_writes": shards })),
    )
        .into_response()
}

/// Readiness: 200 once every shard has recovered and while every shard
/// takes writes.
async fn readyz(State(st): State<HttpState>) -> ApiResult<Response> {
    let router = st.router()?;
    if let Some((shard, cause)) = router.refusing_writes().into_iter().next() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "poisoned",
            format!("shard {shard} refuses writes until restart: {cause}"),
        ));
    }
    Ok(axum::Json(json!({ "status": "ready" })).into_response())
}

async fn metrics_text(State(st): State<HttpState>) -> Response {
    let text = metrics().render(st.0.router.as_deref()).await;
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The reply to a connection beyond `--max-connections`, before closing it.
const TOO_MANY: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 92\r\n\r\n{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is at its connection limit\"}}\n";

/// Serves `app` on `listener` until `shutdown` turns true, then lets open
/// connections finish their current request (up to the drain period,
/// [`ConnLimits::shutdown_drain`](crate::api::ConnLimits::shutdown_drain)).
///
/// Each connection is its own task, so a slow or stalled client holds only
/// its own buffers (hyper's, bounded) and never blocks another; a client
/// that takes longer than the request timeout to send its headers is
/// disconnected; connections beyond the limit get a 503 and are closed.
pub async fn serve(
    listener: crate::shard::spread::Listener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    limits: crate::api::ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::AsyncWriteExt as _;
    let mut acceptor = listener
        .acceptor()
        .map_err(|e| Error::io("listener", "http", e))?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = acceptor.accept() => {
                let (stream, seat) = match accepted {
                    Ok((s, _, seat)) => (s, seat),
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(open) = metrics().admit("http", limits.max_connections) else {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = stream.write_all(TOO_MANY.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _open = (open, seat);
                    let stream = match crate::api::security::accept(stream, tls.as_ref(), limits.request_timeout).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "HTTP TLS handshake failed");
                            return;
                        }
                    };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.request_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    drop(acceptor);
    if tokio::time::timeout(limits.shutdown_drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the drain period; closing them");
    }
    Ok(())
}

/// Entry points for the fuzz targets (fuzz/fuzz_targets/http_request.rs).
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Runs every request decoder on `data`, read as
    /// `URI \n IF-MATCH-VALUE \n JSON-BODY`. Must never panic.
    pub fn decode_request(data: &[u8]) {
        let limits = Limits {
            max_key_size: 64,
            max_value_size: 256,
        };
        let mut parts = data.splitn(3, |b| *b == b'\n');
        let (uri, header, body) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if let Ok(uri) = Uri::try_from(uri) {
            let _ = path_key(&uri, &limits);
            let names = [
                "prefix",
                "start",
                "end",
                "limit",
                "reverse",
                "keys_only",
                "ttl_ms",
            ];
            if let Ok(q) = query(&uri, &names) {
                for (name, v) in q {
                    let _ = parse_u64(&name, &v);
                    let _ = parse_bool(&name, &v);
                }
            }
        }
        if let Ok(v) = HeaderValue::from_bytes(header) {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, v.clone());
            let _ = if_match(&headers);
            headers.insert(header::IF_NONE_MATCH, v);
            let _ = if_match(&headers);
        }
        if let Ok(b) = json_body::<BatchBody>(body) {
            for op in b.ops {
                if let Ok((op, _)) = op.into_op(&limits) {
                    assert!(!op.key().is_empty() && op.key().len() <= limits.max_key_size);
                }
            }
        }
        if let Ok(t) = json_body::<TxnBody>(body)
            && let Ok((compares, success, failure)) = parse_txn(t, &limits)
        {
            assert!(!compares.is_empty() || !success.is_empty());
            for op in success.iter().chain(&failure) {
                assert!(!op.key().is_empty() && op.key().len() <= limits.max_key_size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_errors_map_to_statuses_and_stable_codes() {
        let enospc = Error::io(
            "write",
            "/d/seg",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let eio = Error::io(
            "write",
            "/d/seg",
            std::io::Error::from_raw_os_error(libc::EIO),
        );
        let cases = [
            (Error::InvalidArgument("x".into()), 400, "invalid_argument"),
            (enospc, 507, "disk_full"),
            (eio, 503, "unavailable"),
            (Error::Poisoned { cause: "c".into() }, 503, "poisoned"),
            (Error::Unavailable("x".into()), 503, "unavailable"),
            (Error::corruption("/d/seg", 7, "crc"), 500, "data_loss"),
            (Error::AlreadyExists("x".into()), 409, "already_exists"),
            (Error::Config("x".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let msg = e.to_string();
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{msg}");
            assert_eq!(a.message, msg);
        }
    }

    #[test]
    fn query_values_are_bytes_and_unknown_names_are_refused() {
        let uri: Uri = "/v1/kv?prefix=a%FF+b%2B&limit=3".parse().unwrap();
        let q = query(&uri, &["prefix", "limit"]).unwrap();
        assert_eq!(q[0], ("prefix".to_string(), b"a\xff b+".to_vec()));
        assert_eq!(q[1], ("limit".to_string(), b"3".to_vec()));
        let err = query(&uri, &["limit"]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("prefix"), "{}", err.message);
    }

    #[test]
    fn fuzz_entry_point_survives_odd_inputs() {
        for input in [
            &b""[..],
            b"/v1/kv/%FF%00?limit=1&reverse=x\n\"12\"\n{\"ops\":[{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}]}",
            b"/v1/kv?prefix=%zz\n*\n{\"compare\":[{\"key\":\"a\",\"exists\":true}]}",
            b"\xff\xfe\n\x00\n[",
        ] {
            fuzzing::decode_request(input);
        }
    }

    #[test]
    fn if_match_forms() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            if_match(&m)
        };
        assert_eq!(h(&[]).unwrap(), None);
        assert_eq!(h(&[("if-match", "\"12\"")]).unwrap(), Some(12));
        assert_eq!(h(&[("if-match", "W/\"12\"")]).unwrap(), Some(12));
        assert_eq!(h(&[("if-match", "12")]).unwrap(), Some(12));
        assert_eq!(h(&[("if-none-match", "*")]).unwrap(), Some(0));
        assert_eq!(
            h(&[("if-match", "0"), ("if-none-match", "*")]).unwrap(),
            Some(0)
        );
        assert_eq!(
            h(&[("if-match", "3"), ("if-none-match", "*")])
                .unwrap_err()
                .status,
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            h(&[("if-match", "*")]).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
