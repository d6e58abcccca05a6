//! Rebuild when the project templates or the WIT packages `conductor new`
//! embeds change (`include_dir!` does not tell cargo which files it read).
fn main() {
    println!("cargo:rerun-if-changed=../../templates");
    println!("cargo:rerun-if-changed=../sdk/wit");
}
