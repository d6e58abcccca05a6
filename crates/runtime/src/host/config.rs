//! `conductor:plugin/config`: the string map of the plugin's spec. Its
//! backend is the map itself: a new config means a new instance.

use super::WResult;
use crate::StoreData;
use crate::bindings::conductor::plugin::config;

impl config::Host for StoreData {
    fn get(&mut self, key: String) -> WResult<Option<String>> {
        Ok(self.host.config.get(&key).cloned())
    }

    fn entries(&mut self) -> WResult<Vec<(String, String)>> {
        Ok(self
            .host
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::host::{test_host, test_store};

    #[test]
    fn a_plugin_reads_its_own_config_and_nothing_else() {
        let host = test_host("p").with_config(BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]));
        let mut store = test_store(host);
        assert_eq!(
            config::Host::get(&mut store, "a".into()).unwrap(),
            Some("1".into())
        );
        assert_eq!(config::Host::get(&mut store, "zz".into()).unwrap(), None);
        // Sorted by key, so a plugin sees a stable order.
        assert_eq!(
            config::Host::entries(&mut store).unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }
}
