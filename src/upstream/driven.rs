//! One connection to Ollama driven by the request that uses it, not by a task of its own (see
//! "Backend state" in docs/behaviour.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::quiet::Quiet;
use crate::acked::Shared;

/// hyper's side of one connection: it reads and writes only while polled, and it is polled by
/// whoever waits on it (see [`Driven`]), never by a task of its own.
pub(super) type Connection = http1::Connection<TokioIo<Shared>, Body>;

/// One connection to Ollama, driven by whoever uses it: the request's own task polls it while it
/// waits for the answer and while it reads the body, so that bytes Ollama sends together are
/// passed on together and no second task is woken per request. Idle in the pool, nobody polls it;
/// [`Driven::poll_idle`] catches up (a close by Ollama meanwhile) when it is taken out or reaped.
pub struct Driven {
    pub(super) sender: SendRequest<Body>,
    /// `None` once it ended (closed by either side, or failed). Boxed: the connection's state is
    /// large, and this moves with every request (pool, request, lease, body).
    pub(super) conn: Option<Pin<Box<Connection>>>,
    /// The waker it is driven with (see [`Quiet`]).
    quiet: Arc<Quiet>,
}

impl Driven {
    pub(super) fn new(sender: SendRequest<Body>, conn: Connection) -> Self {
        Driven {
            sender,
            conn: Some(Box::pin(conn)),
            quiet: Quiet::new(),
        }
    }

    /// Drives the connection and polls `f` (which reads what it delivered) in one go: wakes the
    /// connection makes for `f`, or `f` for the connection, during it do not reschedule the task
    /// (see [`Quiet`]).
    pub fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Self, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let quiet = Arc::clone(&self.quiet);
        quiet.poll(cx, |qcx| f(self, qcx))
    }

    /// Lets hyper read and write what it can; `true` while the connection is open.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match conn.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                self.conn = None;
                false
            }
        }
    }

    /// Catches up with what happened while nobody polled the connection; `true` when it is open
    /// and ready for a request.
    pub(super) fn poll_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Outside the task's budget of tokio resources: a task that used it up would otherwise
        // not see a close waiting in the socket.
        let once =
            tokio::task::unconstrained(std::future::poll_fn(|cx| Poll::Ready(self.drive(cx))));
        let open = matches!(std::pin::pin!(once).poll(&mut cx), Poll::Ready(true));
        open && self.sender.is_ready()
    }
}
