//! The Kubernetes operator: watches plugin custom resources and drives each
//! node's host over its Unix-socket API. Not built yet; see operator/README.md.

fn main() {
    eprintln!(
        "conductor-operator is not implemented yet; run plugins locally with `conductor run` (see README.md)"
    );
    std::process::exit(2);
}
