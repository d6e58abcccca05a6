//! One module per subcommand (the node API's client commands share
//! [`node_api`]: each is one request and a printout).

pub mod build;
pub mod cache;
pub mod features;
pub mod new;
pub mod node_api;
pub mod packages;
pub mod pull;
pub mod push;
pub mod run;
pub mod serve;
pub mod sign;

/// Run `fut` on a single-threaded async runtime.
fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

/// `registry/repo:tag` from `oci://registry/repo:tag` (the scheme is optional).
fn strip_scheme(reference: &str) -> &str {
    conductor_api::oci_reference(reference).unwrap_or(reference)
}
