//! The HTTP/2 transport under the benchmark's gRPC clients.
//!
//! The unary mode, over plain TCP, writes its calls straight onto an h2
//! connection: the caller's task opens the stream and sends the request,
//! the connection's task moves the frames, and the caller reads the
//! response. A tonic `Channel` sends each call through a queue to a worker
//! task of its own (`tower::buffer::Buffer`), and hyper's HTTP/2 client
//! under it through another queue to the connection task, which spawns a
//! task per call to wait for its response: three more task hand-offs per
//! call. The client shares the machine's two cores with the daemon it
//! measures, so what it spends is taken from the daemon: with the direct
//! transport the client's CPU per Get fell by a third (12.0 to 8.1 us).
//!
//! Streams (Pipeline, BulkLoad), TLS and `--channel` use the `Channel`:
//! one call per stream costs nothing to speak of, and hyper does the flow
//! control of long request streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, Uri};
use tonic::codegen::{Bytes, Service, StdError};
use tonic::transport::{Channel, Endpoint};

/// One gRPC connection.
#[derive(Clone)]
pub enum Transport {
    /// An h2 connection, driven by a task of its own, for unary calls: a
    /// call's request body is collected whole before it is sent.
    Unary(h2::client::SendRequest<Bytes>),
    /// tonic's channel.
    Channel(Channel),
}

impl Transport {
    /// Connects to `endpoint`: for unary calls only (`unary`) over plain
    /// TCP directly, otherwise (or if `channel`) through a `Channel`.
    /// Returns the transport and the origin its requests must carry.
    pub async fn connect(
        endpoint: &Endpoint,
        channel: bool,
        unary: bool,
    ) -> anyhow::Result<(Transport, Uri)> {
        let uri = endpoint.uri().clone();
        if channel || !unary || uri.scheme_str() == Some("https") {
            let ch = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {uri}"))?;
            // The channel sets the origin itself.
            return Ok((Transport::Channel(ch), Uri::default()));
        }
        let authority = uri
            .authority()
            .with_context(|| format!("no host:port in {uri}"))?
            .as_str()
            .to_owned();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = h2::client::handshake(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {uri}"))?;
        tokio::spawn(async move {
            // Ends when every sender is dropped or the daemon closes the
            // connection; a broken connection shows up as failed calls.
            let _ = conn.await;
        });
        Ok((Transport::Unary(send), uri))
    }
}

impl Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = StdError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, StdError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        match self {
            Transport::Unary(s) => s.poll_ready(cx).map_err(Into::into),
            Transport::Channel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self {
            Transport::Unary(s) => Box::pin(unary(s.clone(), req)),
            Transport::Channel(c) => {
                let sent = c.call(req);
                Box::pin(async move { Ok(sent.await?) })
            }
        }
    }
}

/// One unary call on an h2 connection: the request (headers, then its
/// one message ending the stream), then the response's headers.
async fn unary(
    send: h2::client::SendRequest<Bytes>,
    req: Request<Body>,
) -> Result<Response<Body>, StdError> {
    let (head, body) = req.into_parts();
    let message = body.collect().await?.to_bytes();
    let mut send = send.ready().await?;
    let (response, mut stream) = send.send_request(Request::from_parts(head, ()), false)?;
    stream.send_data(message, true)?;
    let (head, body) = response.await?.into_parts();
    Ok(Response::from_parts(
        head,
        Body::new(H2Body {
            recv: body,
            data_done: false,
        }),
    ))
}

/// A response body read from h2: data frames (their flow-control window
/// given back as they are read), then the trailers, where gRPC puts its
/// status.
struct H2Body {
    recv: h2::RecvStream,
    /// Every data frame was read: the trailers are next.
    data_done: bool,
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(b)) => {
                    let _ = self.recv.flow_control().release_capacity(b.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
