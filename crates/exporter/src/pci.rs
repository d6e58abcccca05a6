//! The PCI ID database (`pci.ids`, the one `lspci` reads) for the `pci_*`
//! decoders: vendor, device, class and subclass names by number.
//!
//! The file is read once when a configuration that uses a `pci_*` decoder
//! loads (the host's capability, not the configuration's), so a missing
//! database fails the load with the field named instead of labelling every
//! series `missing pci.ids db` as ebpf_exporter does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where distributions install the database: Debian and Ubuntu's `pci.ids`
/// package (the path ebpf_exporter reads), then Fedora's `hwdata`.
pub const PCI_IDS_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

#[derive(Debug, thiserror::Error)]
pub enum PciIdsError {
    #[error(
        "the PCI ID database is not on this node (looked for {}): install it (Debian/Ubuntu: apt install pci.ids; Fedora: dnf install hwdata) or drop the pci_* decoders",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Missing(Vec<PathBuf>),
    #[error("cannot read the PCI ID database {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no PCI vendors or classes: it is not a pci.ids file")]
    Empty { path: PathBuf },
}

#[derive(Debug, Default)]
struct Class {
    name: String,
    subclasses: HashMap<u8, String>,
}

/// The names `pci.ids` gives.
#[derive(Debug, Default)]
pub struct PciIds {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    classes: HashMap<u8, Class>,
}

impl PciIds {
    /// The first of `paths` that exists.
    pub fn read_first(paths: &[PathBuf]) -> Result<Self, PciIdsError> {
        let path = paths
            .iter()
            .find(|p| p.exists())
            .ok_or_else(|| PciIdsError::Missing(paths.to_vec()))?;
        Self::read(path)
    }

    pub fn read(path: &Path) -> Result<Self, PciIdsError> {
        let bytes = std::fs::read(path).map_err(|source| PciIdsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let ids = Self::parse(&String::from_utf8_lossy(&bytes));
        if ids.vendors.is_empty() && ids.classes.is_empty() {
            return Err(PciIdsError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(ids)
    }

    /// The format: `vvvv  vendor`, then `\tdddd  device` (and
    /// `\t\tssss ssss  subsystem`, not kept); after them `C cc  class`,
    /// then `\tss  subclass` (and `\t\tpp  programming interface`, not
    /// kept). Lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        enum Section {
            None,
            Vendor(u16),
            Class(u8),
        }
        let mut ids = Self::default();
        let mut section = Section::None;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') || line.starts_with("\t\t") {
                continue;
            }
            if let Some(rest) = line.strip_prefix('\t') {
                let Some((id, name)) = id_and_name(rest) else {
                    continue;
                };
                match section {
                    Section::Vendor(v) => {
                        if let Ok(d) = u16::from_str_radix(id, 16) {
                            ids.devices.insert((v, d), name.to_owned());
                        }
                    }
                    Section::Class(c) => {
                        if let (Ok(s), Some(class)) =
                            (u8::from_str_radix(id, 16), ids.classes.get_mut(&c))
                        {
                            class.subclasses.insert(s, name.to_owned());
                        }
                    }
                    Section::None => {}
                }
            } else if let Some(rest) = line.strip_prefix("C ") {
                section = Section::None;
                if let Some((id, name)) = id_and_name(rest)
                    && let Ok(c) = u8::from_str_radix(id, 16)
                {
                    ids.classes.insert(
                        c,
                        Class {
                            name: name.to_owned(),
                            subclasses: HashMap::new(),
                        },
                    );
                    section = Section::Class(c);
                }
            } else {
                // A vendor, or a section this decoder does not use (the
                // `X ...` lists some files have after the classes).
                section = Section::None;
                if let Some((id, name)) = id_and_name(line)
                    && id.len() == 4
                    && let Ok(v) = u16::from_str_radix(id, 16)
                {
                    ids.vendors.insert(v, name.to_owned());
                    section = Section::Vendor(v);
                }
            }
        }
        ids
    }

    pub fn vendor(&self, id: u16) -> Option<&str> {
        self.vendors.get(&id).map(String::as_str)
    }

    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.devices.get(&(vendor, device)).map(String::as_str)
    }

    pub fn class(&self, id: u8) -> Option<&str> {
        self.classes.get(&id).map(|c| c.name.as_str())
    }

    /// `None` when the class is unknown; `Some(None)` when only the
    /// subclass is.
    pub fn subclass(&self, class: u8, subclass: u8) -> Option<Option<&str>> {
        self.classes
            .get(&class)
            .map(|c| c.subclasses.get(&subclass).map(String::as_str))
    }
}

/// `8086  Intel Corporation` → (`8086`, `Intel Corporation`).
fn id_and_name(line: &str) -> Option<(&str, &str)> {
    let (id, name) = line.split_once("  ")?;
    let id = id.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
8086  Intel Corporation
\t1000  82542 Gigabit Ethernet Controller (Fiber)
\t\t0e11 b0df  NC6132 Gigabit Ethernet Adapter (1000-SX)
10de  NVIDIA Corporation
C 02  Network controller
\t00  Ethernet controller
\t\t00  plain
C 01  Mass storage controller
\t08  Non-Volatile memory controller
";

    #[test]
    fn parses_vendors_devices_classes_and_subclasses() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(
            ids.device(0x8086, 0x1000),
            Some("82542 Gigabit Ethernet Controller (Fiber)")
        );
        // A subsystem line is not a device of the vendor.
        assert_eq!(ids.device(0x8086, 0x0e11), None);
        assert_eq!(ids.device(0x10de, 0x1000), None);
        assert_eq!(ids.class(0x02), Some("Network controller"));
        assert_eq!(ids.subclass(0x02, 0x00), Some(Some("Ethernet controller")));
        assert_eq!(
            ids.subclass(0x01, 0x08),
            Some(Some("Non-Volatile memory controller"))
        );
        assert_eq!(ids.subclass(0x01, 0x0b), Some(None));
        assert_eq!(ids.subclass(0xfd, 0x00), None);
    }

    #[test]
    fn a_missing_database_names_where_it_looked_and_what_to_install() {
        let paths = vec![PathBuf::from("/nonexistent/pci.ids")];
        let err = PciIds::read_first(&paths).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pci.ids"), "{err}");
        assert!(err.contains("apt install pci.ids"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_pci_ids_is_refused() {
        let path = std::env::temp_dir().join(format!("not-pci-ids-{}", std::process::id()));
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let err = PciIds::read(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("not a pci.ids file"), "{err}");
    }
}
