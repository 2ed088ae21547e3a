//! The PostgreSQL settings: the URL (checked, and shown only with its
//! password replaced by `***`), the schema and the node's name.

use std::str::FromStr as _;

/// Whether `url` is a PostgreSQL URL the store can read: it must start
/// with `postgres://` or `postgresql://` and parse. The error names the
/// URL with its password hidden.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = redact(url);
    let scheme_ok = ["postgres://", "postgresql://"]
        .iter()
        .any(|s| url.len() >= s.len() && url[..s.len()].eq_ignore_ascii_case(s));
    if !scheme_ok {
        return Err(format!(
            "database URL {shown:?} is not a PostgreSQL URL; write e.g. \
             \"postgres://user:password@127.0.0.1:5432/rdq\""
        ));
    }
    tokio_postgres::Config::from_str(url)
        .map(drop)
        .map_err(|e| {
            // The parser's message may quote the text it choked on.
            let why = rdq_store::postgres::hide_password(url, &e.to_string());
            format!(
                "malformed database URL {shown:?} ({why}); write e.g. \
                 \"postgres://user:password@127.0.0.1:5432/rdq\""
            )
        })
}

pub use rdq_store::postgres::redact_url as redact;

/// Whether `schema` can name rdq's PostgreSQL schema: lower-case letters,
/// digits and `_`, not starting with a digit, at most 50 characters (it is
/// written into statements unquoted).
pub fn check_schema(schema: &str) -> Result<(), String> {
    if rdq_store::postgres::valid_schema_name(schema) {
        Ok(())
    } else {
        Err(format!(
            "schema {schema:?}: use lower-case letters, digits and _, not starting with a digit, \
             at most 50 characters"
        ))
    }
}

/// Whether `node` can name a node: 1 to 63 printable ASCII characters (what
/// PostgreSQL keeps of an `application_name`).
pub fn check_node(node: &str) -> Result<(), String> {
    let ok = !node.is_empty()
        && node.len() <= 63
        && node.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && node.trim() == node;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node {node:?}: use 1 to 63 printable ASCII characters, with no space at either end"
        ))
    }
}

/// This process's default node name: host name, process id and a random
/// suffix, so two servers on one host never share one.
pub fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let node = format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..));
    // A long host name is cut so the pid and suffix survive.
    if node.len() <= 63 {
        node
    } else {
        node[node.len() - 63..].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_password() {
        assert!(check_url("postgres://postgres@127.0.0.1:5432/test").is_ok());
        assert!(check_url("postgresql://u:pw@localhost/db?connect_timeout=5").is_ok());
        let e = check_url("mysql://u:hunter2@h/db").unwrap_err();
        assert!(
            e.contains("not a PostgreSQL URL") && e.contains("u:***@h"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = check_url("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(e.contains("malformed") && !e.contains("hunter2"), "{e}");
        assert_eq!(
            redact("postgres://u:s3cret@h/db?password=s3cret"),
            "postgres://u:***@h/db?password=***"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn schemas_and_nodes() {
        assert!(check_schema("rdq").is_ok() && check_schema("rdq_test_7").is_ok());
        for bad in ["", "Rdq", "1rdq", "rdq;drop", "a-b", &"x".repeat(51)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
        assert!(check_node("web-1").is_ok());
        assert!(check_node("").is_err() && check_node(" a").is_err());
        assert!(check_node(&"x".repeat(64)).is_err());
        let node = default_node();
        assert!(check_node(&node).is_ok(), "{node}");
    }
}
