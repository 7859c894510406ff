//! The importer's tests: nginx texts converted and read back as the
//! gateway reads them (`Config::from_toml`), with the notes each should
//! bring, and the syntax errors with their lines; the unit converters and
//! TOML quoting on their own.
//!
//! Not here: a gateway serving a converted configuration (the crate's
//! integration tests run the gateway itself).

use super::*;
use crate::config::{Balance, RateLimit, RetryOn, Route, Upstream};

/// Imports `nginx`, and reads the result back as the gateway would.
fn convert(nginx: &str) -> (Config, Vec<String>) {
    let imported = import(nginx).unwrap_or_else(|error| panic!("import: {error}"));
    let config = Config::from_toml(&imported.toml)
        .unwrap_or_else(|error| panic!("{error}\n{}", imported.toml));
    (config, imported.notes)
}

/// The note of `line` that says `says`.
#[track_caller]
fn note<'a>(notes: &'a [String], line: usize, says: &str) -> &'a str {
    let prefix = format!("line {line}: ");
    notes
        .iter()
        .find(|note| note.starts_with(&prefix) && note.contains(says))
        .unwrap_or_else(|| panic!("no note of line {line} saying {says:?} in {notes:#?}"))
}

#[track_caller]
fn no_note(notes: &[String], line: usize) {
    let prefix = format!("line {line}: ");
    assert!(
        !notes.iter().any(|note| note.starts_with(&prefix)),
        "a note of line {line} in {notes:#?}"
    );
}

#[track_caller]
fn route<'a>(config: &'a Config, host: Option<&str>, path: &str) -> &'a Route {
    config
        .routes
        .iter()
        .find(|route| route.host.as_deref() == host && route.path == path)
        .unwrap_or_else(|| panic!("no route {host:?} {path} in {:#?}", config.routes))
}

#[track_caller]
fn upstream<'a>(config: &'a Config, name: &str) -> &'a Upstream {
    config
        .upstreams
        .get(name)
        .unwrap_or_else(|| panic!("no upstream {name} in {:?}", config.upstreams.keys()))
}

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn seconds(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// The README's "Migrating an nginx upstream block, step by step".
const README: &str = r#"upstream shop {
    server 10.0.0.1:8080 weight=3;
    server 10.0.0.2:8080 max_fails=3 fail_timeout=30s;
    server 10.0.0.3:8080 backup;
    keepalive 32;
}
server {
    listen 80;
    location /api/ {
        proxy_pass http://shop/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Real-IP $remote_addr;
        proxy_next_upstream error timeout http_503;
        proxy_next_upstream_tries 2;
        proxy_read_timeout 10s;
    }
}
"#;

#[test]
fn the_readme_example_converts() {
    let (config, notes) = convert(README);
    assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
    let shop = upstream(&config, "shop");
    assert_eq!(shop.balance, Balance::RoundRobin);
    assert_eq!(shop.keepalive, 32);
    assert_eq!(shop.servers.len(), 3);
    assert_eq!(shop.servers[0].address, address("10.0.0.1:8080"));
    assert_eq!(shop.servers[0].weight, 3);
    assert_eq!(shop.servers[1].max_fails, Some(3));
    assert_eq!(shop.servers[1].fail_timeout, Some(seconds(30)));
    assert!(shop.servers[2].backup && !shop.servers[0].backup);
    assert_eq!(config.routes.len(), 1);
    let api = route(&config, None, "/api/");
    assert_eq!(api.upstream, "shop");
    assert_eq!(api.rewrite_prefix.as_deref(), Some("/"));
    assert_eq!(api.timeout, seconds(10));
    assert_eq!(api.retry.tries, 2);
    assert_eq!(
        api.retry.on,
        vec![RetryOn::Error, RetryOn::Timeout, RetryOn::Http503]
    );
    assert_eq!(
        api.set_request_headers,
        headers(&[("x-real-ip", "$remote_addr")])
    );
    // nginx sends the upstream's name as Host here: the one note.
    assert!(!api.preserve_host);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    note(&notes, 10, "proxy_pass: nginx sends Host: shop");
}

#[test]
fn servers_names_and_locations_become_ordered_routes() {
    let (config, notes) = convert(
        r#"http {
    upstream web { server 10.0.1.1:80; }
    upstream api { server 10.0.2.1:9000; }
    proxy_set_header Host $host;
    server {
        listen 80;
        server_name example.com www.example.com;
        location / { proxy_pass http://web; }
        location /api/ { proxy_pass http://api/; }
        location /api/v2/ { proxy_pass http://api/v2/; }
    }
    server {
        listen 80;
        server_name *.example.org .example.net ~^api\d+\.example\.com$;
        location / { proxy_pass http://web; }
    }
    server {
        listen 8080 default_server;
        server_name _;
        location / { proxy_pass http://web; }
    }
}
"#,
    );
    assert_eq!(
        config.server.listen,
        vec![address("0.0.0.0:80"), address("0.0.0.0:8080")]
    );
    let order: Vec<(Option<&str>, &str)> = config
        .routes
        .iter()
        .map(|route| (route.host.as_deref(), route.path.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            (Some("example.com"), "/api/v2/"),
            (Some("example.com"), "/api/"),
            (Some("example.com"), "/"),
            (Some("www.example.com"), "/api/v2/"),
            (Some("www.example.com"), "/api/"),
            (Some("www.example.com"), "/"),
            (Some("example.net"), "/"),
            (Some("*.example.org"), "/"),
            (Some("*.example.net"), "/"),
            (None, "/"),
        ]
    );
    let v2 = route(&config, Some("www.example.com"), "/api/v2/");
    assert_eq!(v2.upstream, "api");
    assert_eq!(v2.rewrite_prefix.as_deref(), Some("/v2/"));
    assert!(v2.preserve_host);
    assert_eq!(route(&config, None, "/").upstream, "web");
    note(
        &notes,
        9,
        "location /api/: its route comes before the one of line 8",
    );
    note(
        &notes,
        10,
        "location /api/v2/: its route comes before the one of line 8",
    );
    note(&notes, 7, "nginx's default server");
    note(
        &notes,
        14,
        "server_name ~^api\\d+\\.example\\.com$: a regular expression",
    );
    // The listeners differ per server: the gateway has one list.
    note(&notes, 5, "its listeners serve every route");
    note(&notes, 12, "its listeners serve every route");
    note(&notes, 17, "its listeners serve every route");
    no_note(&notes, 18);
    // Disjoint routes moved past each other need no note.
    no_note(&notes, 15);
}

#[test]
fn proxy_set_header_is_inherited_unless_redefined() {
    let (config, notes) = convert(
        r#"http {
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_read_timeout 30s;
    upstream app { server 127.0.0.1:9001; }
    server {
        listen 8080;
        location /inherits/ { proxy_pass http://app; }
        location /replaces/ {
            proxy_pass http://app;
            proxy_set_header X-Tenant $http_x_tenant;
            proxy_read_timeout 5s;
        }
        location /outer/ {
            proxy_set_header Host $host;
            proxy_set_header X-Outer yes;
            root /srv;
            location /outer/inner/ { proxy_pass http://app; }
        }
    }
    server {
        listen 8080;
        server_name b.example.com;
        location /server-level/ { proxy_pass http://app; }
        location /server-level/inner/ { proxy_pass http://app; proxy_set_header Host $host; }
        # After the locations, and still theirs, as in nginx.
        proxy_set_header X-Server "one";
    }
}
"#,
    );
    let inherits = route(&config, None, "/inherits/");
    assert_eq!(
        inherits.set_request_headers,
        headers(&[("x-real-ip", "$remote_addr")])
    );
    assert!(inherits.preserve_host);
    assert_eq!(inherits.timeout, seconds(30));

    // One proxy_set_header replaces all of the level around it, Host too.
    let replaces = route(&config, None, "/replaces/");
    assert_eq!(
        replaces.set_request_headers,
        headers(&[("x-tenant", "$http_x_tenant")])
    );
    assert!(!replaces.preserve_host);
    assert_eq!(replaces.timeout, seconds(5));
    note(&notes, 10, "nginx sends Host: app");

    // A location without proxy_pass passes its settings down; its own
    // directives are one note.
    let inner = route(&config, None, "/outer/inner/");
    assert_eq!(inner.set_request_headers, headers(&[("x-outer", "yes")]));
    assert!(inner.preserve_host);
    note(&notes, 14, "location /outer/: no proxy_pass: not converted");
    no_note(&notes, 17);

    let server_level = route(&config, Some("b.example.com"), "/server-level/");
    assert_eq!(
        server_level.set_request_headers,
        headers(&[("x-server", "one")])
    );
    assert!(!server_level.preserve_host);
    let redefined = route(&config, Some("b.example.com"), "/server-level/inner/");
    assert!(redefined.set_request_headers.is_empty());
    assert!(redefined.preserve_host);
    assert_eq!(redefined.timeout, seconds(30));
}

#[test]
fn every_balance_method() {
    let (config, notes) = convert(
        r#"upstream rr { server 10.0.0.1; }
upstream lc { least_conn; server 10.0.0.1:81; }
upstream iph { ip_hash; server 10.0.0.1:82; }
upstream h { hash $request_uri; server 10.0.0.1:83; }
upstream hc { hash $http_x_user consistent; server 10.0.0.1:84; }
upstream r2 { random two least_conn; server 10.0.0.1:85; }
upstream r2d { random two; server 10.0.0.1:86; }
upstream r1 { random; server 10.0.0.1:87; }
upstream hbad { hash $upstream_addr; server 10.0.0.1:88; }
upstream ka { server 10.0.0.1:89; keepalive 16; keepalive_timeout 75s; keepalive_requests 1000; zone ka 64k; }
"#,
    );
    let balance = |name: &str| upstream(&config, name).balance;
    assert_eq!(balance("rr"), Balance::RoundRobin);
    assert_eq!(
        upstream(&config, "rr").servers[0].address,
        address("10.0.0.1:80")
    );
    assert_eq!(balance("lc"), Balance::LeastConn);
    assert_eq!(balance("iph"), Balance::IpHash);
    assert_eq!(balance("h"), Balance::Hash);
    assert_eq!(
        upstream(&config, "h").hash_key.as_deref(),
        Some("$request_uri")
    );
    assert!(!upstream(&config, "h").consistent);
    assert_eq!(balance("hc"), Balance::Hash);
    assert_eq!(
        upstream(&config, "hc").hash_key.as_deref(),
        Some("$http_x_user")
    );
    assert!(upstream(&config, "hc").consistent);
    assert_eq!(balance("r2"), Balance::RandomTwo);
    assert_eq!(balance("r2d"), Balance::RandomTwo);
    assert_eq!(balance("r1"), Balance::RandomTwo);
    assert_eq!(balance("hbad"), Balance::RoundRobin);
    let ka = upstream(&config, "ka");
    assert_eq!(ka.keepalive, 16);
    assert_eq!(ka.keepalive_timeout, seconds(75));
    assert_eq!(ka.keepalive_requests, 1000);
    no_note(&notes, 6);
    no_note(&notes, 7);
    note(&notes, 8, "random: converted to balance = \"random_two\"");
    note(
        &notes,
        9,
        "$upstream_addr is not a variable the gateway knows",
    );
    note(&notes, 10, "zone: not needed");
    // No server block: nginx's default port.
    assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
    note(&notes, 1, "no server block");
    assert!(config.routes.is_empty());
}

#[test]
fn server_address_forms() {
    let (config, notes) = convert(
        r#"upstream v6 { server [::1]:8080; server [2001:db8::1]; server 10.0.0.1 weight=2 max_conns=100 down slow_start=30s; }
upstream named { server backend.internal:9000 weight=5; }
upstream mixed { server 10.0.0.5:80; server other.internal; server unix:/tmp/app.sock; }
upstream sockets { server unix:/tmp/a.sock; }
server {
    listen 8080;
    proxy_set_header Host $host;
    location /v6/ { proxy_pass http://v6; }
    location /named/ { proxy_pass http://named; }
    location /mixed/ { proxy_pass http://mixed; }
    location /sockets/ { proxy_pass http://sockets; }
    location /direct/ { proxy_pass http://10.0.0.9:8080/inner/; }
    location /direct-again/ { proxy_pass http://10.0.0.9:8080; }
    location /by-name/ { proxy_pass http://api.internal:7000; }
    location /no-port/ { proxy_pass http://10.0.0.10; }
}
"#,
    );
    let v6 = upstream(&config, "v6");
    let addresses: Vec<SocketAddr> = v6.servers.iter().map(|server| server.address).collect();
    assert_eq!(
        addresses,
        vec![
            address("[::1]:8080"),
            address("[2001:db8::1]:80"),
            address("10.0.0.1:80")
        ]
    );
    assert_eq!(v6.servers[2].weight, 2);
    assert_eq!(v6.servers[2].max_conns, 100);
    assert!(v6.servers[2].down);
    note(&notes, 1, "slow_start=30s: not converted");

    let named = upstream(&config, "named");
    assert!(named.servers.is_empty());
    assert_eq!(
        named.resolve.as_deref(),
        Some("dns:///backend.internal:9000")
    );
    note(&notes, 2, "upstream named resolves it instead");

    let mixed = upstream(&config, "mixed");
    assert_eq!(mixed.servers.len(), 1);
    assert_eq!(mixed.servers[0].address, address("10.0.0.5:80"));
    note(
        &notes,
        3,
        "server other.internal:80: a host name cannot be a static server",
    );
    note(&notes, 3, "server unix:/tmp/app.sock: a unix socket");

    assert!(!config.upstreams.contains_key("sockets"));
    note(&notes, 4, "upstream sockets: no server the gateway can use");
    note(
        &notes,
        11,
        "upstream sockets has no server the gateway can use",
    );
    assert!(!config.routes.iter().any(|route| route.path == "/sockets/"));

    let direct = upstream(&config, "10.0.0.9_8080");
    assert_eq!(direct.servers.len(), 1);
    assert_eq!(direct.servers[0].address, address("10.0.0.9:8080"));
    let inner = route(&config, None, "/direct/");
    assert_eq!(inner.upstream, "10.0.0.9_8080");
    assert_eq!(inner.rewrite_prefix.as_deref(), Some("/inner/"));
    let again = route(&config, None, "/direct-again/");
    assert_eq!(again.upstream, "10.0.0.9_8080");
    assert_eq!(again.rewrite_prefix, None);
    assert_eq!(
        upstream(&config, "10.0.0.10_80").servers[0].address,
        address("10.0.0.10:80")
    );

    let by_name = upstream(&config, "api.internal_7000");
    assert_eq!(by_name.resolve.as_deref(), Some("dns:///api.internal:7000"));
    assert_eq!(
        route(&config, None, "/by-name/").upstream,
        "api.internal_7000"
    );
    note(
        &notes,
        14,
        "a host name: upstream \"api.internal_7000\" resolves it",
    );
}

#[test]
fn listen_forms() {
    let (config, notes) = convert(
        r#"server {
    listen 80;
    listen 127.0.0.1:8080;
    listen [::1]:8081 ipv6only=on;
    listen *:8082 reuseport backlog=512;
    listen 443 ssl http2;
    listen 10.0.0.1;
    listen 8083 proxy_protocol;
    listen 80;
    listen unix:/run/nginx.sock;
    server_name _;
    location / { proxy_pass http://127.0.0.1:9000; proxy_set_header Host $host; }
}
server {
    location / { proxy_pass http://127.0.0.1:9001; proxy_set_header Host $host; }
}
"#,
    );
    assert_eq!(
        config.server.listen,
        vec![
            address("0.0.0.0:80"),
            address("127.0.0.1:8080"),
            address("[::1]:8081"),
            address("0.0.0.0:8082"),
            address("10.0.0.1:80"),
            address("0.0.0.0:8083"),
        ]
    );
    for quiet in [2, 3, 4, 5, 7, 9] {
        no_note(&notes, quiet);
    }
    note(&notes, 6, "listen 443 ssl http2: TLS is not converted");
    note(&notes, 8, "proxy_protocol: not converted");
    note(&notes, 10, "a unix socket");
    note(&notes, 14, "server: no listen: listen = [\"0.0.0.0:80\"]");
    // Both servers take any host on port 80: the first route wins.
    assert_eq!(config.routes.len(), 1);
    assert_eq!(route(&config, None, "/").upstream, "127.0.0.1_9000");
    note(
        &notes,
        15,
        "the route of line 12 has the same host and path",
    );
}

#[test]
fn a_server_with_only_tls_listeners_still_gets_a_listener() {
    let (config, notes) = convert(
            "server {\n    listen 443 ssl;\n    location / { proxy_pass http://10.0.0.1:80; proxy_set_header Host $host; }\n}\n",
        );
    assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
    note(&notes, 1, "no listener could be converted");
    note(&notes, 2, "TLS is not converted");
}

#[test]
fn time_and_size_units() {
    let (config, notes) = convert(
        r#"http {
    client_max_body_size 10m;
    client_header_timeout 1m;
    large_client_header_buffers 4 16k;
    upstream app {
        server 10.0.0.1:80 fail_timeout=1d;
        server 10.0.0.2:80 fail_timeout=1500ms;
        keepalive_timeout 90;
    }
    server {
        listen 80;
        proxy_set_header Host $host;
        location / {
            proxy_pass http://app;
            proxy_read_timeout 2m;
            proxy_connect_timeout 500ms;
            proxy_next_upstream_timeout 1h;
        }
        location /upload/ {
            proxy_pass http://app;
            client_max_body_size 1g;
            proxy_read_timeout 90;
        }
    }
}
"#,
    );
    assert_eq!(config.server.max_body_bytes, 1 << 30);
    note(&notes, 21, "the largest: max_body_bytes = 1073741824");
    assert_eq!(config.server.header_timeout, seconds(60));
    assert_eq!(config.server.max_header_bytes, 4 * 16 * 1024);
    note(&notes, 4, "max_header_bytes = 65536");
    let app = upstream(&config, "app");
    assert_eq!(app.servers[0].fail_timeout, Some(seconds(24 * 3600)));
    assert_eq!(
        app.servers[1].fail_timeout,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(app.keepalive_timeout, seconds(90));
    assert_eq!(app.connect_timeout, Duration::from_millis(500));
    let root = route(&config, None, "/");
    assert_eq!(root.timeout, seconds(120));
    assert_eq!(root.retry.timeout, Some(seconds(3600)));
    assert_eq!(route(&config, None, "/upload/").timeout, seconds(90));

    assert_eq!(nginx_duration("30"), Ok(seconds(30)));
    assert_eq!(nginx_duration("1h30m"), Ok(seconds(5400)));
    assert_eq!(nginx_duration("1w"), Ok(seconds(7 * 24 * 3600)));
    assert!(nginx_duration("").is_err());
    assert!(nginx_duration("fast").is_err());
    assert!(
        nginx_duration("10y").is_err(),
        "beyond what the gateway takes"
    );
    assert_eq!(gateway_duration(seconds(0)), "0s");
    assert_eq!(gateway_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(gateway_duration(seconds(5400)), "90m");
    assert_eq!(gateway_duration(seconds(2 * 86400)), "48h");
    assert_eq!(nginx_size("512"), Ok(512));
    assert_eq!(nginx_size("8k"), Ok(8192));
    assert_eq!(nginx_size("10M"), Ok(10 << 20));
    assert!(nginx_size("k").is_err() && nginx_size("-1").is_err());
    assert!(nginx_size("99999999999g").is_err());
}

#[test]
fn an_unlimited_body_size_is_a_large_one() {
    let (config, notes) = convert(
            "upstream app { server 10.0.0.1:80; }\nserver {\n    listen 80;\n    client_max_body_size 0;\n    location / { proxy_pass http://app; proxy_set_header Host $host; }\n}\n",
        );
    assert_eq!(config.server.max_body_bytes, UNLIMITED_BODY);
    note(
        &notes,
        4,
        "client_max_body_size 0: nginx does not limit bodies",
    );
}

/// The `rate_limit` of `config`'s route `path` (any host).
#[track_caller]
fn rate_limit<'a>(config: &'a Config, host: Option<&str>, path: &str) -> &'a RateLimit {
    route(config, host, path)
        .rate_limit
        .as_ref()
        .unwrap_or_else(|| panic!("no rate_limit on route {host:?} {path}"))
}

/// Whether a note of `line` says `says`.
fn noted(notes: &[String], line: usize, says: &str) -> bool {
    let prefix = format!("line {line}: ");
    notes
        .iter()
        .any(|note| note.starts_with(&prefix) && note.contains(says))
}

#[test]
fn limit_req_and_its_zone_become_the_route_s_rate_limit() {
    let nginx = r#"http {
    limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        proxy_set_header Host $host;
        location /api/ { limit_req zone=api burst=20 nodelay; proxy_pass http://app; }
        location /free/ { proxy_pass http://app; }
    }
}
"#;
    let (config, notes) = convert(nginx);
    assert_eq!(
        *rate_limit(&config, None, "/api/"),
        RateLimit {
            rate: 10.0,
            // nginx passes burst + 1 at once: the first has no excess.
            burst: 21,
            key: "$binary_remote_addr".to_owned(),
            // 10 MiB of 128-byte states.
            max_keys: 81_920,
        }
    );
    assert_eq!(route(&config, None, "/free/").rate_limit, None);
    assert!(import(nginx).unwrap().toml.contains(
        r#"rate_limit = { rate = 10.0, burst = 21, key = "$binary_remote_addr", max_keys = 81920 }"#
    ));
    note(&notes, 2, "limit_req_zone api:10m: max_keys = 81920");
    assert_eq!(
        note(&notes, 7, "503"),
        "line 7: limit_req: nginx refuses requests over the limit with 503 (limit_req_status is not set); the gateway answers 429 Too Many Requests, with Retry-After"
    );
    // nodelay is what the gateway does: nothing else to say.
    assert_eq!(notes.len(), 2, "{notes:#?}");
}

#[test]
fn limit_req_is_inherited_unless_a_level_has_its_own() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $binary_remote_addr zone=wide:1m rate=100r/s;
    limit_req_zone $binary_remote_addr zone=narrow:1m rate=5r/s;
    limit_req zone=wide burst=50 nodelay;
    upstream app { server 10.0.0.1:80; }
    proxy_set_header Host $host;
    server {
        listen 80;
        server_name a.example.com;
        location / { proxy_pass http://app; }
        location /login/ {
            limit_req zone=narrow nodelay;
            proxy_pass http://app;
            location /login/admin/ { proxy_pass http://app; }
        }
    }
    server {
        listen 80;
        server_name b.example.com;
        limit_req zone=narrow burst=2 nodelay;
        location / { proxy_pass http://app; }
        location /bulk/ { limit_req zone=wide burst=50 nodelay; proxy_pass http://app; }
    }
}
"#,
    );
    let a = Some("a.example.com");
    let b = Some("b.example.com");
    let limit = |host, path| {
        let limit = rate_limit(&config, host, path);
        (limit.rate, limit.burst)
    };
    assert_eq!(limit(a, "/"), (100.0, 51), "from http");
    assert_eq!(limit(a, "/login/"), (5.0, 1), "its own");
    assert_eq!(limit(a, "/login/admin/"), (5.0, 1), "from its location");
    assert_eq!(limit(b, "/"), (5.0, 3), "from its server");
    assert_eq!(limit(b, "/bulk/"), (100.0, 51), "its own");
    assert_eq!(rate_limit(&config, a, "/").max_keys, 8192);
    // Each zone's size is said once, however many routes use it.
    assert_eq!(
        notes
            .iter()
            .filter(|note| note.contains("max_keys = 8192"))
            .count(),
        2,
        "{notes:#?}"
    );
}

#[test]
fn limit_req_zone_rates_per_second_and_per_minute() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $binary_remote_addr zone=slow:1m rate=30r/m;
    limit_req_zone $binary_remote_addr zone=slowest:1m rate=1r/m;
    limit_req_zone $binary_remote_addr zone=bare:1m rate=5;
    limit_req_zone $binary_remote_addr zone=bad:1m rate=0.5r/s;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        proxy_set_header Host $host;
        location /a/ { limit_req zone=slow nodelay; proxy_pass http://app; }
        location /b/ { limit_req zone=slowest nodelay; proxy_pass http://app; }
        location /c/ { limit_req zone=bare nodelay; proxy_pass http://app; }
        location /d/ { limit_req zone=bad nodelay; proxy_pass http://app; }
    }
}
"#,
    );
    assert_eq!(rate_limit(&config, None, "/a/").rate, 0.5);
    assert!((rate_limit(&config, None, "/b/").rate - 1.0 / 60.0).abs() < 1e-12);
    assert_eq!(rate_limit(&config, None, "/c/").rate, 5.0);
    assert_eq!(route(&config, None, "/d/").rate_limit, None);
    note(
        &notes,
        5,
        "limit_req_zone bad: rate=0.5r/s is not a rate such as 10r/s or 30r/m: not converted",
    );
    note(
        &notes,
        13,
        "limit_req zone=bad nodelay: its limit_req_zone (line 5) could not be converted",
    );

    assert_eq!(nginx_rate("10r/s"), Ok(10.0));
    assert_eq!(nginx_rate("120r/m"), Ok(2.0));
    assert_eq!(nginx_rate("7"), Ok(7.0));
    for bad in ["0r/s", "-1r/s", "+1r/s", "r/s", "fast", "1r/h", ""] {
        assert!(nginx_rate(bad).is_err(), "{bad}");
    }
}

#[test]
fn limit_req_burst_nodelay_and_delay() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $binary_remote_addr zone=api:1m rate=10r/s;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        proxy_set_header Host $host;
        location /one/ { limit_req zone=api; proxy_pass http://app; }
        location /queued/ { limit_req zone=api burst=5; proxy_pass http://app; }
        location /some/ { limit_req zone=api burst=5 delay=2; proxy_pass http://app; }
        location /all/ { limit_req zone=api burst=5 delay=5; proxy_pass http://app; }
        location /bad/ { limit_req zone=api burst=many; proxy_pass http://app; }
    }
}
"#,
    );
    // nginx's default burst=0: one request at a time, never delayed.
    assert_eq!(rate_limit(&config, None, "/one/").burst, 1);
    assert!(!noted(&notes, 7, "no queue"), "{notes:#?}");
    assert_eq!(rate_limit(&config, None, "/queued/").burst, 6);
    assert_eq!(
        note(&notes, 8, "no queue"),
        "line 8: limit_req zone=api: nginx holds the requests over 10r/s back (up to 5) to pass them at 10r/s; the gateway has no queue: it passes them at once (as nodelay) and answers 429 beyond burst = 6"
    );
    assert_eq!(rate_limit(&config, None, "/some/").burst, 6);
    note(
        &notes,
        9,
        "nginx passes 2 requests over 10r/s at once and holds the next 3 back",
    );
    // A delay as large as the burst never holds a request back.
    assert_eq!(rate_limit(&config, None, "/all/").burst, 6);
    assert!(!noted(&notes, 10, "no queue"), "{notes:#?}");
    assert_eq!(route(&config, None, "/bad/").rate_limit, None);
    note(
        &notes,
        11,
        "limit_req zone=api burst=many: burst=many is not a number of requests: not converted",
    );
}

#[test]
fn limit_req_zones_the_gateway_cannot_take() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $limit_key zone=mapped:1m rate=1r/s;
    limit_req_zone $http_x_api_key zone=keys:1m rate=10r/s sync;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        proxy_set_header Host $host;
        location /missing/ { limit_req zone=missing; proxy_pass http://app; }
        location /mapped/ { limit_req zone=mapped; proxy_pass http://app; }
        location /keys/ { limit_req zone=keys burst=100 nodelay; proxy_pass http://app; }
        location /trial/ {
            limit_req_dry_run on;
            limit_req zone=keys nodelay;
            proxy_pass http://app;
        }
        limit_req_zone $binary_remote_addr zone=late:1m rate=1r/s;
    }
}
"#,
    );
    assert_eq!(route(&config, None, "/missing/").rate_limit, None);
    note(
        &notes,
        8,
        "limit_req zone=missing: its limit_req_zone is not in this file: not converted",
    );
    assert_eq!(route(&config, None, "/mapped/").rate_limit, None);
    note(
        &notes,
        2,
        "limit_req_zone mapped: $limit_key is not a variable the gateway knows: not converted",
    );
    note(
        &notes,
        9,
        "its limit_req_zone (line 2) could not be converted",
    );
    let keys = rate_limit(&config, None, "/keys/");
    assert_eq!(keys.key, "$http_x_api_key");
    assert_eq!((keys.rate, keys.burst, keys.max_keys), (10.0, 101, 8192));
    note(&notes, 3, "limit_req_zone keys sync: not converted");
    note(
        &notes,
        3,
        "nginx does not limit the requests whose key $http_x_api_key is empty",
    );
    assert_eq!(route(&config, None, "/trial/").rate_limit, None);
    note(&notes, 12, "limit_req_dry_run on: not converted");
    note(
        &notes,
        16,
        "limit_req_zone: not converted (not in its place)",
    );

    assert!(may_expand_to_nothing("$http_x_api_key"));
    assert!(may_expand_to_nothing("${cookie_session}$arg_token"));
    assert!(!may_expand_to_nothing("$binary_remote_addr"));
    assert!(!may_expand_to_nothing("$http_x_api_key$remote_addr"));
    assert!(!may_expand_to_nothing("key:$http_x_api_key"));
    assert!(!may_expand_to_nothing("${http_x_api_key}-"));
}

#[test]
fn limit_req_status_other_than_429_is_noted() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $binary_remote_addr zone=api:1m rate=10r/s;
    limit_req zone=api nodelay;
    upstream app { server 10.0.0.1:80; }
    proxy_set_header Host $host;
    server {
        listen 80;
        server_name a.example.com;
        location / { proxy_pass http://app; }
        location /x/ { proxy_pass http://app; }
    }
    server {
        listen 80;
        server_name b.example.com;
        limit_req_status 503;
        location / { proxy_pass http://app; }
        location /polite/ { limit_req_status 429; proxy_pass http://app; }
        location /odd/ { limit_req_status 200; proxy_pass http://app; }
    }
}
"#,
    );
    assert_eq!(config.routes.len(), 5);
    assert!(config.routes.iter().all(|route| route.rate_limit.is_some()));
    // nginx's default is said once, not once per route.
    let defaults: Vec<&String> = notes
        .iter()
        .filter(|note| note.contains("limit_req_status is not set"))
        .collect();
    assert_eq!(defaults.len(), 1, "{notes:#?}");
    assert!(defaults[0].starts_with("line 3: "), "{notes:#?}");
    assert_eq!(
        note(&notes, 15, "limit_req_status"),
        "line 15: limit_req_status 503: not converted: the gateway answers 429 Too Many Requests (with Retry-After) to requests over the limit"
    );
    assert!(!noted(&notes, 17, "limit_req_status"), "{notes:#?}");
    note(
        &notes,
        18,
        "limit_req_status 200: not a status nginx takes (400 to 599)",
    );
}

#[test]
fn several_limit_req_in_a_location_keep_the_first() {
    let (config, notes) = convert(
        r#"http {
    limit_req_zone $binary_remote_addr zone=ip:1m rate=10r/s;
    limit_req_zone $host zone=site:1m rate=1000r/s;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        proxy_set_header Host $host;
        limit_req zone=ip burst=10 nodelay;
        limit_req zone=site burst=100 nodelay;
        location / { proxy_pass http://app; }
        location /api/ { proxy_pass http://app; }
    }
}
"#,
    );
    for path in ["/", "/api/"] {
        let limit = rate_limit(&config, None, path);
        assert_eq!((limit.rate, limit.burst), (10.0, 11), "{path}");
        assert_eq!(limit.key, "$binary_remote_addr");
    }
    let others: Vec<&String> = notes
        .iter()
        .filter(|note| note.starts_with("line 9: "))
        .collect();
    assert_eq!(
        others,
        ["line 9: limit_req zone=site: not converted: nginx holds a request to every limit_req of its location, the gateway's route to one rate_limit, zone ip's (line 8)"]
    );
}

#[test]
fn https_and_other_proxy_pass_targets_are_left_out() {
    let (config, notes) = convert(
        r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    location /secure/ { proxy_pass https://app; proxy_ssl_verify on; }
    location /vars/ { proxy_pass http://$backend; }
    location /socket/ { proxy_pass http://unix:/tmp/app.sock:/; }
    location / { proxy_pass http://app; proxy_set_header Host $host; }
}
"#,
    );
    assert_eq!(config.routes.len(), 1);
    assert_eq!(route(&config, None, "/").upstream, "app");
    note(
            &notes,
            4,
            "proxy_pass https://app: TLS to upstreams is not converted: location /secure/ is not converted",
        );
    assert!(!notes.iter().any(|note| note.contains("proxy_ssl_verify")));
    note(&notes, 5, "an address made of variables");
    note(&notes, 6, "a unix socket");
}

#[test]
fn regex_exact_and_named_locations_are_reported() {
    let (config, notes) = convert(
        r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    location = /healthz { proxy_pass http://app; }
    location ~ \.php$ { proxy_pass http://app; }
    location ~* \.(png|jpg)$ { root /var/www; }
    location ^~ /static/ { proxy_pass http://app; proxy_set_header Host $host; }
    location @fallback { proxy_pass http://app; }
    location /files { root /srv; expires 30d; }
    location / { proxy_pass http://app; proxy_set_header Host $host; }
}
"#,
    );
    let paths: Vec<&str> = config
        .routes
        .iter()
        .map(|route| route.path.as_str())
        .collect();
    assert_eq!(paths, vec!["/static/", "/"]);
    note(
        &notes,
        4,
        "location = /healthz: an exact match: not converted",
    );
    note(
        &notes,
        5,
        "location ~ \\.php$: a regular expression: not converted",
    );
    note(&notes, 6, "location ~* \\.(png|jpg)$: a regular expression");
    note(
        &notes,
        7,
        "location ^~ /static/: converted as a plain prefix",
    );
    note(&notes, 8, "location @fallback: a named location");
    note(&notes, 9, "location /files: no proxy_pass");
    // One note for the location, none for what is inside it.
    assert_eq!(
        notes
            .iter()
            .filter(|note| note.starts_with("line 9:"))
            .count(),
        1
    );
}

#[test]
fn includes_are_reported_as_not_followed() {
    let (config, notes) = convert(
        r#"include /etc/nginx/modules/*.conf;
http {
    include mime.types;
    upstream app { server 10.0.0.1:80; include upstream-extra.conf; }
    server {
        listen 80;
        include snippets/ssl.conf;
        location / { include proxy_params; proxy_pass http://app; proxy_set_header Host $host; }
    }
}
"#,
    );
    assert_eq!(route(&config, None, "/").upstream, "app");
    note(&notes, 1, "include /etc/nginx/modules/*.conf: not followed");
    note(&notes, 3, "include mime.types: not followed");
    note(&notes, 4, "include upstream-extra.conf: not followed");
    note(&notes, 7, "include snippets/ssl.conf: not followed");
    note(&notes, 8, "include proxy_params: not followed");
}

#[test]
fn syntax_errors_name_their_line() {
    for (text, line, says) in [
        (
            "http {\n  upstream a {\n    server 10.0.0.1;\n",
            2,
            "never closed",
        ),
        ("server {\n    listen 80;\n}\n}\n", 4, "closes no block"),
        ("server {\n    listen 80\n}\n", 2, "listen: no ; at the end"),
        (
            "server {\n    listen 80\n    server_name a.example.com;\n}\n",
            2,
            "server_name on line 3 starts the next one",
        ),
        (
            "server {\n    listen 80 location / {\n    }\n}\n",
            2,
            "a { block follows it",
        ),
        ("worker_processes 4", 1, "no ; at the end"),
        (
            "server {\n    add_header X-A \"abc;\n}\n",
            2,
            "never closed",
        ),
        ("server {\n    add_header X-A 'abc;\n}\n", 2, "never closed"),
        ("add_header X-A \"a\"b;\n", 1, "right after a quoted string"),
        ("server;\n", 1, "server: no { } block"),
        ("\n\n;\n", 3, "a ; with no directive"),
        ("\n{ }\n", 2, "a { with no directive"),
    ] {
        let error = import(text).expect_err(text);
        assert_eq!(error.line(), Some(line), "{text:?}: {error}");
        let message = error.to_string();
        assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        assert!(message.contains(says), "{text:?}: {message}");
    }
}

#[test]
fn retry_directives() {
    let (config, notes) = convert(
        r#"upstream app { server 10.0.0.1:80; server 10.0.0.2:80; server 10.0.0.3:80 down; server 10.0.0.4:80 backup; }
server {
    listen 80;
    proxy_set_header Host $host;
    proxy_next_upstream error timeout http_502 http_504 http_429 non_idempotent invalid_header;
    location /a/ { proxy_pass http://app; proxy_next_upstream_tries 0; proxy_next_upstream_timeout 0; }
    location /b/ { proxy_pass http://app; proxy_next_upstream off; proxy_next_upstream_tries 5; }
    location /c/ {
        proxy_pass http://app;
        proxy_next_upstream http_500 http_503 http_403 http_404;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 15s;
    }
}
"#,
    );
    let a = route(&config, None, "/a/");
    assert_eq!(a.retry.tries, 3, "every server but the one down");
    assert_eq!(
        a.retry.on,
        vec![
            RetryOn::Error,
            RetryOn::Timeout,
            RetryOn::Http502,
            RetryOn::Http504,
            RetryOn::Http429
        ]
    );
    assert!(a.retry.non_idempotent);
    assert_eq!(a.retry.timeout, None);
    note(
        &notes,
        6,
        "proxy_next_upstream_tries 0: nginx tries every server: retry.tries = 3",
    );
    note(&notes, 5, "invalid_header: not converted");
    assert_eq!(route(&config, None, "/b/").retry.tries, 1);
    let c = route(&config, None, "/c/");
    assert_eq!(
        c.retry.on,
        vec![
            RetryOn::Http500,
            RetryOn::Http503,
            RetryOn::Http403,
            RetryOn::Http404
        ]
    );
    assert_eq!(c.retry.tries, 3);
    assert_eq!(c.retry.timeout, Some(seconds(15)));
    assert!(!c.retry.non_idempotent);
}

#[test]
fn connect_timeouts_that_disagree_take_the_largest() {
    let (config, notes) = convert(
        r#"upstream app { server 10.0.0.1:80; }
upstream other { server 10.0.0.2:80; }
server {
    listen 80;
    proxy_set_header Host $host;
    proxy_connect_timeout 2s;
    location /a/ { proxy_pass http://app; }
    location /b/ { proxy_pass http://app; proxy_connect_timeout 10s; }
    location /c/ { proxy_pass http://other; proxy_send_timeout 5s; }
}
"#,
    );
    assert_eq!(upstream(&config, "app").connect_timeout, seconds(10));
    assert_eq!(upstream(&config, "other").connect_timeout, seconds(2));
    note(&notes, 8, "upstream app disagree (2s, 10s)");
    note(&notes, 9, "proxy_send_timeout: not converted");
    no_note(&notes, 6);
}

#[test]
fn request_and_response_headers() {
    let (config, notes) = convert(
        r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    add_header X-Frame-Options DENY always;
    add_header X-Served-By gateway;
    proxy_hide_header X-Powered-By;
    location /a/ {
        proxy_pass http://app;
        proxy_set_header Host $proxy_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header Accept-Encoding "";
        proxy_set_header X-Server $server_name;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header X-Request $request_id;
        proxy_set_header Connection "";
    }
    location /b/ {
        proxy_pass http://app;
        proxy_set_header Host backend.example.com;
        add_header Cache-Control no-store always;
        proxy_hide_header Server;
    }
}
"#,
    );
    let a = route(&config, None, "/a/");
    assert!(!a.preserve_host);
    note(&notes, 8, "nginx sends Host: app");
    assert_eq!(
        a.set_request_headers,
        headers(&[("x-real-ip", "$remote_addr"), ("x-request", "$request_id")])
    );
    assert_eq!(a.remove_request_headers, vec!["accept-encoding"]);
    note(
        &notes,
        13,
        "$server_name is not a variable the gateway knows",
    );
    note(&notes, 14, "a hop-by-hop header");
    for quiet in [4, 6, 10, 11, 12, 15, 16] {
        no_note(&notes, quiet);
    }
    assert_eq!(
        a.set_response_headers,
        headers(&[("x-frame-options", "DENY"), ("x-served-by", "gateway")])
    );
    note(
        &notes,
        5,
        "add_header X-Served-By: set on every upstream response",
    );
    assert_eq!(a.remove_response_headers, vec!["x-powered-by"]);

    let b = route(&config, None, "/b/");
    assert!(b.preserve_host);
    assert_eq!(
        b.set_request_headers,
        headers(&[("host", "backend.example.com")])
    );
    assert_eq!(
        b.set_response_headers,
        headers(&[("cache-control", "no-store")])
    );
    assert_eq!(b.remove_response_headers, vec!["server"]);
}

#[test]
fn quotes_escapes_and_comments() {
    let (config, notes) = convert(
        r#"# a comment { with braces } and ; semicolons
upstream "app" { server 10.0.0.1:80; }   # a quoted name
upstream my.app { server 10.0.0.2:80; }
server {
    listen 80; # trailing
    location /q/ {
        proxy_pass http://app;
        proxy_set_header Host $host;
        proxy_set_header 'X-Quote' "say \"hi\" \\ back";
        proxy_set_header X-Tab "a\tb";
        proxy_set_header X-Braced v=${arg_v};
        add_header X-Hash a#b always;
    }
    location /dotted/ { proxy_pass http://my.app; proxy_set_header Host $host; }
}
"#,
    );
    let q = route(&config, None, "/q/");
    assert_eq!(q.upstream, "app");
    assert_eq!(
        q.set_request_headers,
        headers(&[
            ("x-quote", r#"say "hi" \ back"#),
            ("x-tab", "a\tb"),
            ("x-braced", "v=${arg_v}"),
        ])
    );
    assert_eq!(q.set_response_headers, headers(&[("x-hash", "a#b")]));
    assert_eq!(route(&config, None, "/dotted/").upstream, "my.app");
    assert_eq!(
        upstream(&config, "my.app").servers[0].address,
        address("10.0.0.2:80")
    );
    assert!(notes.is_empty(), "{notes:#?}");
    assert_eq!(toml_string("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
    assert_eq!(toml_key("my.app"), r#""my.app""#);
    assert_eq!(toml_key("my-app_2"), "my-app_2");
}

#[test]
fn other_directives_and_blocks_are_reported() {
    let (config, notes) = convert(
        r#"user nginx;
worker_processes 4;
events { worker_connections 2048; use epoll; }
stream { server { listen 12345; proxy_pass 10.0.0.1:12345; } }
http {
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    proxy_cache_path /var/cache levels=1:2 keys_zone=c:10m;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        if ($request_method = POST) { return 405; }
        location / {
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_cache c;
            proxy_buffering off;
            if ($args) { set $x 1; }
        }
    }
}
"#,
    );
    assert_eq!(config.server.max_connections, 2048);
    assert_eq!(route(&config, None, "/").upstream, "app");
    note(&notes, 1, "user: not converted");
    note(
        &notes,
        2,
        "worker_processes 4: not converted (run sinew gateway --workers 4)",
    );
    note(
        &notes,
        3,
        "worker_connections 2048: [server] max_connections = 2048",
    );
    note(&notes, 3, "use: not converted");
    note(
        &notes,
        4,
        "stream { }: not converted (the gateway proxies HTTP only)",
    );
    note(&notes, 6, "map { }: not converted");
    note(
        &notes,
        7,
        "proxy_cache_path: not converted (the gateway has no cache yet)",
    );
    note(&notes, 11, "if { }: not converted");
    assert_eq!(
        note(&notes, 15, "proxy_cache"),
        "line 15: proxy_cache: not converted (the gateway has no cache yet)"
    );
    note(
        &notes,
        16,
        "proxy_buffering: not converted (the gateway streams bodies through)",
    );
    note(&notes, 17, "if { }: not converted");
    // In the order of the text.
    let lines: Vec<usize> = notes
        .iter()
        .filter_map(|note| note.strip_prefix("line ")?.split(':').next()?.parse().ok())
        .collect();
    assert!(
        lines.windows(2).all(|pair| pair[0] <= pair[1]),
        "{notes:#?}"
    );
}

#[test]
fn mangled_text_is_an_error_with_a_line_or_a_file_the_gateway_takes() {
    let text = format!(
            "{README}http {{ map $a $b {{ default 1; }} server {{ listen 8080; server_name a.example.com; location / {{ proxy_pass http://10.0.0.1:80/x/; add_header 'X' \"v\\\"w\"; }} }} }}\n"
        );
    let chars: Vec<char> = text.chars().collect();
    for index in 0..chars.len() {
        for change in [
            None,
            Some('{'),
            Some('}'),
            Some(';'),
            Some('"'),
            Some('#'),
            Some('$'),
        ] {
            let mut mangled = chars.clone();
            match change {
                None => {
                    mangled.remove(index);
                }
                Some(c) => mangled.insert(index, c),
            }
            let mangled: String = mangled.into_iter().collect();
            match import(&mangled) {
                // import checks its output with Config::from_toml
                // and fails without a line if the check refuses it.
                Ok(imported) => assert!(Config::from_toml(&imported.toml).is_ok()),
                Err(error) => assert!(error.line().is_some(), "{mangled}\n{error}"),
            }
        }
    }
}
