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
