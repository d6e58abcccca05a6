//! Test component: every `tick` fails. With config `mode: error` it returns
//! an error; otherwise it panics, which traps the instance.

use conductor_sdk::prelude::*;

struct Trap {
    return_error: bool,
}

impl Plugin for Trap {
    fn init() -> Result<Self> {
        Ok(Trap {
            return_error: config::get("mode").as_deref() == Some("error"),
        })
    }

    fn tick(&mut self) -> Result<()> {
        if self.return_error {
            return Err(Error::msg("testing-trap: failing on purpose"));
        }
        panic!("testing-trap: trapping on purpose");
    }
}

conductor_sdk::export_plugin!(Trap);
