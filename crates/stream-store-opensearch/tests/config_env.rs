//! Environment-variable configuration: pure parsing through a lookup map, no process env, no node.

use std::collections::HashMap;
use std::time::Duration;

use stream_store_opensearch::{Auth, ConfigError, OpenSearchConfig};

fn parse(vars: &[(&str, &str)]) -> Result<OpenSearchConfig, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    OpenSearchConfig::from_lookup(|name| map.get(name).cloned())
}

fn error_for(vars: &[(&str, &str)]) -> ConfigError {
    match parse(vars) {
        Ok(config) => panic!("{vars:?} was accepted: {config:?}"),
        Err(e) => e,
    }
}

#[test]
fn no_variables_give_the_defaults() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.url, "http://localhost:9200/");
    assert!(matches!(c.auth, Auth::None));
    assert!(c.verify_certs);
    assert_eq!(c.index_prefix, "stream_events");
    assert_eq!((c.number_of_shards, c.number_of_replicas), (1, 1));
    assert_eq!(c.queue_capacity, 10_000);
    assert_eq!(c.bulk_max_events, 1_000);
    assert_eq!(c.flush_interval, Duration::from_secs(1));
    assert_eq!(c.retention_days, 30);
    assert_eq!(c.retention_interval, Duration::from_secs(3600));
}

#[test]
fn host_port_and_ssl_make_the_url() {
    let c = parse(&[
        ("OPENSEARCH_HOST", "search.internal"),
        ("OPENSEARCH_PORT", "9243"),
        ("OPENSEARCH_USE_SSL", "TRUE"),
    ])
    .unwrap();
    assert_eq!(c.url, "https://search.internal:9243/");
    let c = parse(&[("OPENSEARCH_HOST", "::1"), ("OPENSEARCH_USE_SSL", "no")]).unwrap();
    assert_eq!(c.url, "http://[::1]:9200/");
    // Empty values count as unset.
    let c = parse(&[("OPENSEARCH_HOST", ""), ("OPENSEARCH_PORT", " ")]).unwrap();
    assert_eq!(c.url, "http://localhost:9200/");
}

#[test]
fn the_url_is_a_single_alternative() {
    let c = parse(&[("OPENSEARCH_URL", "https://search.example.com:443/prefix")]).unwrap();
    assert_eq!(c.url, "https://search.example.com/prefix");
    let e = error_for(&[("OPENSEARCH_URL", "http://a:9200"), ("OPENSEARCH_PORT", "9201")]);
    assert_eq!(e.variable, "OPENSEARCH_PORT");
    assert!(e.to_string().contains("OPENSEARCH_URL"), "{e}");
}

#[test]
fn basic_auth_needs_user_and_password() {
    let c = parse(&[
        ("OPENSEARCH_AUTH_TYPE", "Basic"),
        ("OPENSEARCH_USERNAME", "admin"),
        ("OPENSEARCH_PASSWORD", "s3cret"),
    ])
    .unwrap();
    match &c.auth {
        Auth::Basic { username, password } => assert_eq!((username.as_str(), password.as_str()), ("admin", "s3cret")),
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not print the password"
    );

    let e = error_for(&[("OPENSEARCH_AUTH_TYPE", "basic"), ("OPENSEARCH_PASSWORD", "x")]);
    assert_eq!(e.variable, "OPENSEARCH_USERNAME");
    let e = error_for(&[("OPENSEARCH_AUTH_TYPE", "basic"), ("OPENSEARCH_USERNAME", "admin")]);
    assert_eq!(e.variable, "OPENSEARCH_PASSWORD");
}

#[test]
fn bad_values_name_their_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("OPENSEARCH_PORT", "nine")], "OPENSEARCH_PORT"),
        (&[("OPENSEARCH_PORT", "0")], "OPENSEARCH_PORT"),
        (&[("OPENSEARCH_PORT", "70000")], "OPENSEARCH_PORT"),
        (&[("OPENSEARCH_USE_SSL", "maybe")], "OPENSEARCH_USE_SSL"),
        (&[("OPENSEARCH_VERIFY_CERTS", "2")], "OPENSEARCH_VERIFY_CERTS"),
        (&[("OPENSEARCH_HOST", "http://x:9200")], "OPENSEARCH_HOST"),
        (&[("OPENSEARCH_HOST", "a b")], "OPENSEARCH_HOST"),
        (&[("OPENSEARCH_URL", "not a url")], "OPENSEARCH_URL"),
        (&[("OPENSEARCH_URL", "ftp://x:21")], "OPENSEARCH_URL"),
        (&[("OPENSEARCH_URL", "http://user:pw@x:9200")], "OPENSEARCH_URL"),
        (&[("OPENSEARCH_AUTH_TYPE", "kerberos")], "OPENSEARCH_AUTH_TYPE"),
        (&[("OPENSEARCH_INDEX_PREFIX", "Events")], "OPENSEARCH_INDEX_PREFIX"),
        (&[("OPENSEARCH_INDEX_PREFIX", "_hidden")], "OPENSEARCH_INDEX_PREFIX"),
        (&[("OPENSEARCH_INDEX_PREFIX", "a*b")], "OPENSEARCH_INDEX_PREFIX"),
        (&[("OPENSEARCH_INDEX_SHARDS", "0")], "OPENSEARCH_INDEX_SHARDS"),
        (&[("OPENSEARCH_INDEX_REPLICAS", "-1")], "OPENSEARCH_INDEX_REPLICAS"),
        (&[("OPENSEARCH_QUEUE_CAPACITY", "0")], "OPENSEARCH_QUEUE_CAPACITY"),
        (&[("OPENSEARCH_BULK_MAX_EVENTS", "many")], "OPENSEARCH_BULK_MAX_EVENTS"),
        (&[("OPENSEARCH_BULK_MAX_BYTES", "10")], "OPENSEARCH_BULK_MAX_BYTES"),
        (
            &[("OPENSEARCH_FLUSH_INTERVAL_MS", "1.5")],
            "OPENSEARCH_FLUSH_INTERVAL_MS",
        ),
        (
            &[("OPENSEARCH_REQUEST_TIMEOUT_MS", "0")],
            "OPENSEARCH_REQUEST_TIMEOUT_MS",
        ),
        (&[("OPENSEARCH_MAX_RETRIES", "-3")], "OPENSEARCH_MAX_RETRIES"),
        (&[("OPENSEARCH_RETENTION_DAYS", "abc")], "OPENSEARCH_RETENTION_DAYS"),
        (&[("OPENSEARCH_RETENTION_DAYS", "-1")], "OPENSEARCH_RETENTION_DAYS"),
        (&[("OPENSEARCH_RETENTION_DAYS", "7.5")], "OPENSEARCH_RETENTION_DAYS"),
        (&[("OPENSEARCH_RETENTION_DAYS", "30d")], "OPENSEARCH_RETENTION_DAYS"),
    ];
    for (vars, variable) in cases {
        let e = error_for(vars);
        assert_eq!(e.variable, *variable, "{vars:?}: {e}");
        assert!(
            e.to_string().starts_with(variable),
            "the message names the variable: {e}"
        );
    }
}

#[test]
fn index_and_writer_settings_are_read() {
    let c = parse(&[
        ("OPENSEARCH_INDEX_PREFIX", "myapp_events"),
        ("OPENSEARCH_INDEX_SHARDS", "3"),
        ("OPENSEARCH_INDEX_REPLICAS", "0"),
        ("OPENSEARCH_QUEUE_CAPACITY", "500"),
        ("OPENSEARCH_BULK_MAX_EVENTS", "250"),
        ("OPENSEARCH_BULK_MAX_BYTES", "1048576"),
        ("OPENSEARCH_FLUSH_INTERVAL_MS", "200"),
        ("OPENSEARCH_REQUEST_TIMEOUT_MS", "5000"),
        ("OPENSEARCH_MAX_RETRIES", "2"),
        ("OPENSEARCH_VERIFY_CERTS", "off"),
        ("OPENSEARCH_RETENTION_DAYS", "90"),
    ])
    .unwrap();
    assert_eq!(c.index_prefix, "myapp_events");
    assert_eq!(c.index_pattern(), "myapp_events-*");
    assert_eq!((c.number_of_shards, c.number_of_replicas), (3, 0));
    assert_eq!(
        (c.queue_capacity, c.bulk_max_events, c.bulk_max_bytes),
        (500, 250, 1 << 20)
    );
    assert_eq!(c.flush_interval, Duration::from_millis(200));
    assert_eq!(c.request_timeout, Duration::from_secs(5));
    assert_eq!(c.max_retries, 2);
    assert!(!c.verify_certs);
    assert_eq!(c.retention_days, 90);
}

#[test]
fn retention_zero_keeps_forever_and_a_bad_value_says_why() {
    assert_eq!(parse(&[("OPENSEARCH_RETENTION_DAYS", "0")]).unwrap().retention_days, 0);
    assert_eq!(
        parse(&[("OPENSEARCH_RETENTION_DAYS", " 7 ")]).unwrap().retention_days,
        7
    );
    let e = error_for(&[("OPENSEARCH_RETENTION_DAYS", "abc")]);
    assert_eq!(
        e.to_string(),
        "OPENSEARCH_RETENTION_DAYS: \"abc\" is not a number of days (a whole number, at least 0)"
    );
}

#[test]
fn settings_made_in_code_are_validated_by_field() {
    let mut c = OpenSearchConfig::new("http://127.0.0.1:9250");
    assert!(c.validate().is_ok());
    c.index_prefix = "Bad Prefix".into();
    assert_eq!(c.validate().unwrap_err().variable, "index_prefix");
    c.index_prefix = "ok".into();
    c.bulk_max_events = 0;
    assert_eq!(c.validate().unwrap_err().variable, "bulk_max_events");
    c.bulk_max_events = 10;
    c.url = "localhost:9200".into();
    assert_eq!(c.validate().unwrap_err().variable, "url");
    c.url = "http://127.0.0.1:9250".into();
    c.retention_interval = Duration::ZERO;
    assert_eq!(c.validate().unwrap_err().variable, "retention_interval");
}

#[cfg(not(feature = "aws"))]
#[test]
fn aws_auth_without_the_feature_is_an_error_naming_the_auth_type() {
    let e = error_for(&[("OPENSEARCH_AUTH_TYPE", "aws"), ("AWS_REGION", "eu-west-1")]);
    assert_eq!(e.variable, "OPENSEARCH_AUTH_TYPE");
    assert!(e.reason.contains("`aws` feature"), "{e}");
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;

    const KEYS: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
    ];

    #[test]
    fn region_from_either_variable_and_static_credentials() {
        let mut vars = vec![("OPENSEARCH_AUTH_TYPE", "aws"), ("AWS_REGION", "eu-west-1")];
        vars.extend(KEYS);
        let c = parse(&vars).unwrap();
        let Auth::Aws(aws) = &c.auth else {
            panic!("{:?}", c.auth)
        };
        assert_eq!((aws.region.as_str(), aws.service.as_str()), ("eu-west-1", "es"));
        assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));

        vars.push(("OPENSEARCH_AWS_REGION", "us-east-2"));
        vars.push(("OPENSEARCH_AWS_SERVICE", "aoss"));
        let c = parse(&vars).unwrap();
        let Auth::Aws(aws) = &c.auth else {
            panic!("{:?}", c.auth)
        };
        assert_eq!((aws.region.as_str(), aws.service.as_str()), ("us-east-2", "aoss"));
    }

    #[test]
    fn a_sigv4_client_builds_from_the_environment() {
        let mut vars = vec![("OPENSEARCH_AUTH_TYPE", "aws"), ("OPENSEARCH_AWS_REGION", "eu-west-1")];
        vars.extend(KEYS);
        vars.push(("OPENSEARCH_URL", "https://search-domain.eu-west-1.es.amazonaws.com"));
        let c = parse(&vars).unwrap();
        stream_store_opensearch::build_client(&c).expect("a SigV4 client");
    }

    #[test]
    fn missing_or_bad_aws_values_name_their_variable() {
        let mut vars = vec![("OPENSEARCH_AUTH_TYPE", "aws")];
        vars.extend(KEYS);
        assert_eq!(error_for(&vars).variable, "OPENSEARCH_AWS_REGION");
        let mut bad = vars.clone();
        bad.push(("OPENSEARCH_AWS_REGION", "Europe West"));
        assert_eq!(error_for(&bad).variable, "OPENSEARCH_AWS_REGION");
        let mut bad = vars.clone();
        bad.push(("AWS_REGION", "eu-west-1"));
        bad.push(("OPENSEARCH_AWS_SERVICE", "s3"));
        assert_eq!(error_for(&bad).variable, "OPENSEARCH_AWS_SERVICE");
        let e = error_for(&[("OPENSEARCH_AUTH_TYPE", "aws"), ("AWS_REGION", "eu-west-1")]);
        assert_eq!(e.variable, "AWS_ACCESS_KEY_ID");
    }
}
