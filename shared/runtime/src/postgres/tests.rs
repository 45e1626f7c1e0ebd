//! URL handling: what a libpq multi-host URL keeps on its way into the pool.

use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(3);

fn ports(config: &tokio_postgres::Config) -> Vec<(String, u16)> {
    config
        .get_hosts()
        .iter()
        .zip(config.get_ports())
        .map(|(host, port)| match host {
            Host::Tcp(name) => (name.clone(), *port),
            Host::Unix(path) => (path.display().to_string(), *port),
        })
        .collect()
}

#[test]
fn a_multi_host_url_reaches_the_pool_with_every_host_and_read_write() {
    for url in [
        "postgresql://corral:s3cret@db-a:5433,db-b:5434/corral?target_session_attrs=read-write",
        "host=db-a,db-b port=5433,5434 user=corral password=s3cret dbname=corral \
         target_session_attrs=read-write",
    ] {
        let target = Target::new(url, None, TIMEOUT).expect(url);
        assert_eq!(target.hosts(), 2, "{url}");
        let config = session_config(&target, "corral-worker");
        assert_eq!(
            ports(&config),
            [("db-a".to_owned(), 5433), ("db-b".to_owned(), 5434)],
            "{url}"
        );
        assert_eq!(
            config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite,
            "{url}"
        );
        assert_eq!(config.get_dbname(), Some("corral"));
        assert_eq!(config.get_application_name(), Some("corral-worker"));
        assert_eq!(config.get_connect_timeout(), Some(&TIMEOUT));
        // The session settings every host's connections start with.
        assert_eq!(
            config.get_options(),
            Some("-c statement_timeout=3000 -c synchronous_commit=on")
        );
        assert!(!target.uses_tls());
    }
}

#[test]
fn the_urls_own_options_are_kept_before_the_pools() {
    let url = "postgres://u@a:1,b:2/db?target_session_attrs=read-write&options=-c%20work_mem%3D8MB";
    let config = session_config(&Target::new(url, None, TIMEOUT).unwrap(), "x");
    assert_eq!(
        config.get_options(),
        Some("-c work_mem=8MB -c statement_timeout=3000 -c synchronous_commit=on")
    );
    assert_eq!(config.get_hosts().len(), 2);
}

#[test]
fn several_hosts_without_read_write_are_refused_naming_the_setting() {
    for url in [
        "postgres://u@a:1,b:2/db",
        "postgres://u@a:1,b:2/db?target_session_attrs=any",
        "host=a,b port=1,2 dbname=db",
    ] {
        let err = Target::named(url, None, TIMEOUT, SPOOL).expect_err(url);
        let message = format!("{err:#}");
        assert!(
            message.contains("CORRAL_SPOOL_DATABASE_URL names 2 hosts")
                && message.contains("target_session_attrs=read-write"),
            "{message}"
        );
    }
    // One host: the operator's choice (a CloudNativePG `-rw` Service).
    Target::new("postgres://u@db-rw:5432/db", None, TIMEOUT).unwrap();
    Target::new(
        "postgres://u@db-rw/db?target_session_attrs=read-write",
        None,
        TIMEOUT,
    )
    .unwrap();
}

#[test]
fn a_multi_host_targets_debug_shows_no_password_and_no_host_list_is_lost() {
    let url = "postgresql://corral:s3cret@a:1,b:2/corral?target_session_attrs=read-write";
    let target = Target::new(url, None, TIMEOUT).unwrap();
    let shown = format!("{target:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    // Another database on the same servers keeps both hosts (migrations
    // create the database through `postgres`).
    let other = target.with_dbname("postgres");
    assert_eq!(other.hosts(), 2);
    assert_eq!(other.dbname(), Some("postgres"));
}

#[tokio::test]
async fn each_host_gets_the_connect_deadline_within_a_checkout() {
    let one = Target::new("postgres://u@a/db", None, TIMEOUT).unwrap();
    assert_eq!(pool(&one, 1, "x").unwrap().timeouts().create, Some(TIMEOUT));
    let three = "postgres://u@a,b,c/db?target_session_attrs=read-write";
    let three = Target::new(three, None, TIMEOUT).unwrap();
    let timeouts = pool(&three, 1, "x").unwrap().timeouts();
    assert_eq!(timeouts.create, Some(TIMEOUT * 3));
    assert_eq!(timeouts.wait, Some(TIMEOUT));
}
