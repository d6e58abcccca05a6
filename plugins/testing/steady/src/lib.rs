//! Test component: the healthy neighbour. Counts its ticks in `ticks`, and
//! greets with config key `greeting` once in the log and once on stdout.

use conductor_sdk::prelude::*;

struct Steady {
    ticks: Counter,
}

impl Plugin for Steady {
    fn init() -> Result<Self> {
        let greeting = config::get("greeting").unwrap_or_else(|| "<unset>".to_owned());
        info!("steady started: {greeting}");
        println!("steady stdout: {greeting}");
        Ok(Steady {
            ticks: Counter::declare("ticks", "Ticks handled.", &[])?,
        })
    }

    fn tick(&mut self) -> Result<()> {
        self.ticks.inc(&[])
    }
}

conductor_sdk::export_plugin!(Steady);
