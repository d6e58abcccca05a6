//! Test component: every `tick` logs 4,000 lines, half through the `log`
//! interface and half to stdout, as a plugin logging in a tight loop would.
//! Config `lineBytes` pads each line to about that many bytes (to fill a
//! slow log reader's buffers with fewer lines).

use conductor_sdk::prelude::*;

const LINES_PER_TICK: u32 = 4000;

struct Chatty {
    ticks: u64,
    pad: String,
}

impl Plugin for Chatty {
    fn init() -> Result<Self> {
        let bytes: usize = conductor_sdk::config::parse("lineBytes")?.unwrap_or(0);
        Ok(Chatty {
            ticks: 0,
            pad: ".".repeat(bytes.saturating_sub(40)),
        })
    }

    fn tick(&mut self) -> Result<()> {
        self.ticks += 1;
        for i in 0..LINES_PER_TICK / 2 {
            conductor_sdk::info!("chatty tick {} line {i} {}", self.ticks, self.pad);
            println!("chatty stdout tick {} line {i} {}", self.ticks, self.pad);
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Chatty);
