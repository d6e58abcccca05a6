//! `conductor features`: probe this machine's kernel the way the daemon
//! does at start, without a daemon (to check a node before deploying).

use std::process::ExitCode;

use conductor_client::{NodeView, Output, print_node};

#[derive(clap::Args)]
pub struct FeaturesArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(args: FeaturesArgs) -> ExitCode {
    let view = NodeView::from(conductor_node::features::node_status());
    match print_node(args.output, &view) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit as u8)
        }
    }
}
