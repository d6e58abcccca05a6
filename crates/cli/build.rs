//! Rebuild when the project templates `conductor new` embeds change
//! (`include_dir!` does not tell cargo which files it read).
fn main() {
    println!("cargo:rerun-if-changed=../../templates");
}
