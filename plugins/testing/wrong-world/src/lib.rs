//! Test component: implements a world other than `conductor:plugin`, so the
//! host must refuse to load it.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export run: func() -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
