//! The harness runs end to end (every system, tiny phases, two runs of every
//! cell in fresh processes) and writes the JSON keys the targets are stated in. Keeps the harness from rotting in CI without
//! running the real matrix; asserts no timing.

use std::process::Command;

#[test]
fn every_system_runs_and_the_json_has_every_ratio() {
    let dir = std::env::temp_dir().join(format!("sinew-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let output = Command::new(env!("CARGO_BIN_EXE_sinew-bench"))
        .args([
            "--payloads",
            "1024",
            "--local-payloads",
            "65536,1048576",
            "--concurrency",
            "1,64",
            "--warmup-ms",
            "50",
            "--duration-ms",
            "150",
            "--runs",
            "2",
            "--shapes",
            "256x1,16x16",
            // Far below tonic's max, so that no system of a debug build
            // falls behind the rate (a failed cell, by design).
            "--open-loop",
            "0.3",
            "--idle-connections",
            "200",
            "--streams",
            "1,64",
            "--bytes-payloads",
            "1024",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run sinew-bench");
    assert!(
        output.status.success(),
        "sinew-bench failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("valid JSON");
    for key in [
        "qps_vs_tonic",
        "qps_vs_tarpc",
        "qps_vs_volo",
        "qps_vs_tonic_tuned",
        "qps_vs_volo_mux",
        "p50_vs_raw_pingpong",
        "qps_vs_raw_pipelined",
        "qps_spread_tcp",
        "qps_vs_best_peer_256x1",
        "qps_vs_best_peer_16x16",
        "uds_p50_vs_tcp_p50",
        "grpc_path_vs_tonic",
        "grpc_path_vs_grpc_go",
        "idle_rss_vs_grpc_go",
        "idle_rss_kib",
        "stream_vs_tonic_64",
        "stream_vs_tonic_1",
        "grpc_path_stream_vs_tonic_64",
        "grpc_path_stream_vs_grpc_go_64",
        "h2load_grpc_path_vs_grpc_go_1x64",
        "h2load_grpc_path_vs_grpc_go_64x1",
        "h2load_grpc_path_vs_tonic_1x64",
        "h2load_grpc_path_vs_tonic_64x1",
        "bytes_qps_vs_best_peer_1k",
        "qps_vs_go_netrpc",
        "qps_vs_go_netrpc_c1",
        "shm_vs_uds_p50_1k",
        "shm_vs_uds_p50_64k",
        "shm_vs_uds_qps_1m",
        "balanced_vs_single",
        "balanced_slow_p99_vs_healthy",
        "balanced_slow_p99_vs_tonic",
        "hedge_p99_vs_unhedged",
        "failing_attempts_per_call",
        "failing_success_rate",
        "stack_vs_bare",
        "overload_goodput_limited",
        "overload_goodput_unlimited",
        "overload_p99_vs_unloaded",
        "tls_vs_tcp_qps_64",
        "tls_vs_tcp_p50_64",
        "tls_vs_tcp_qps_1",
        "tls_vs_tcp_p50_1",
        "tls_vs_tonic_tls",
        "tls_full_handshakes_per_core",
        "telemetry_vs_bare",
    ] {
        let value = &report["ratios"][key];
        assert!(
            value.as_f64().is_some_and(|v| v > 0.0),
            "ratios.{key} = {value}"
        );
    }
    // Shares of calls: figures that may be 0.
    for key in [
        "balanced_slow_share",
        "tonic_balanced_slow_share",
        "hedge_extra_load",
    ] {
        let value = &report["ratios"][key];
        assert!(
            value.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)),
            "ratios.{key} = {value}"
        );
    }
    for system in ["sinew-unix", "sinew-shm"] {
        let idle = &report["idle_cpu_percent"][system];
        assert!(
            idle.as_f64().is_some_and(|v| v >= 0.0),
            "idle {system} = {idle}"
        );
    }
    let results = report["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        12 * 2 + 3 * 3 * 2 + 15 * 2 + 3 * 2 + 6 + 6 + 6 * 2 + 13 + 3 + 6 + 1 + 1,
        "15 closed-loop systems x 2 concurrency levels, the 3 sinew transports at 3 \
         payloads, those 15 in 2 many-client shapes, the 3 h2load rows in 2 shapes, \
         6 systems in the open loop, 6 with idle connections, 6 streaming 1 and 64 \
         streams, 13 with the bytes payload, the 3 balancing rows' one cell each, \
         the 6 resilience rows' one cell each, the TLS handshake row's one cell, \
         the telemetry row's one cell"
    );
    let bytes = results
        .iter()
        .filter(|r| r["bytes"].as_bool() == Some(true))
        .count();
    assert_eq!(bytes, 13, "the bytes cells");
    assert_eq!(report["plan"]["runs"].as_u64(), Some(2));
    let open: Vec<_> = results
        .iter()
        .filter(|r| r["rate"].as_u64() > Some(0))
        .collect();
    assert_eq!(open.len(), 6, "the open-loop cells");
    let base = &report["open_loop_base"];
    let sustained = base["sustained_rate"]
        .as_u64()
        .expect("tonic sustained a rate");
    assert!(
        base["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|probe| probe["rate"].as_u64() == Some(sustained)),
        "{base}"
    );
    assert!(
        open.iter()
            .all(|r| r["rate"].as_u64() == Some((sustained as f64 * 0.3).round() as u64)),
        "the open-loop cells run at 30% of the sustained rate"
    );
    for key in report["ratios"].as_object().unwrap().keys() {
        assert!(
            report["ratio_targets"][key].is_string(),
            "ratio {key} has a target"
        );
    }
    for result in results {
        assert_eq!(result["failed"].as_bool(), Some(false), "{result}");
        let runs = result["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{result}");
        for run in runs {
            assert!(run["calls"].as_u64().unwrap() > 0, "{result}");
            assert_eq!(run["errors"].as_u64(), Some(0), "{result}");
        }
        let qps = &result["spread"]["qps"];
        let (min, max) = (qps["min"].as_f64().unwrap(), qps["max"].as_f64().unwrap());
        let median = result["median"]["qps"].as_f64().unwrap();
        assert!(min <= median && median <= max, "{result}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
