//! `wasi:http` for components whose toolchain imports it by default
//! (componentize-js links its `fetch` into every component): the types and
//! `outgoing-handler` are linked so such a component loads, and every
//! outgoing request is refused with `HTTP-request-denied`. A plugin's spec
//! grants no network access; nothing leaves the host.

use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::StoreData;

/// The policy: no outgoing HTTP, whatever the request.
pub(crate) struct DenyOutgoing;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        tracing::debug!(uri = %request.uri(), "outgoing HTTP request denied: plugins have no network access");
        Box::new(std::future::ready(Err(Error::HttpRequestDenied)))
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// The hook the linked `outgoing-handler` calls for every request
    /// answers `HTTP-request-denied` and sends nothing: the request's
    /// address is a listener of this test's that must see no connection.
    #[test]
    fn every_outgoing_request_is_denied() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let body = http_body_util::Empty::new()
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed_unsync();
        let request = http::Request::get(url).body(body).unwrap();
        let response =
            DenyOutgoing.send_request(request, None, Box::new(std::future::ready(Ok(()))));
        let outcome = ready_now(Box::into_pin(response));
        assert!(
            matches!(outcome, Err(Error::HttpRequestDenied)),
            "{:?}",
            outcome.err()
        );
        assert!(listener.accept().is_err(), "the host connected");
    }

    /// Poll a future that is ready at once (no executor needed).
    fn ready_now<F: Future + ?Sized>(mut f: std::pin::Pin<Box<F>>) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the denial is not immediate"),
        }
    }
}
