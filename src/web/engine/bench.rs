//! `?bench[&batch=N]`: time the U-Net forward pass of the loaded model on this browser's GPU
//! and write the result into #bench-result (JSON, read by the end-to-end tests), plus a
//! table for people.
//!
//! Owns no state: it reads the model ([`loading`](super::loading)) and the device
//! ([`session`](super::session)), builds its own U-Net for the requested batch and writes
//! only [`Ui::bench`](super::Ui::bench) and the status line.

use leptos::prelude::*;

use super::{loading, now_ms, query_param, report_error, ui, with_engine};

pub fn bench_mode() -> bool {
    // `?bench=lab` is the diffusion lab's benchmark (engine/lab.rs).
    query_param("bench").is_some_and(|v| v != "lab")
}

/// In bench mode: #bench-result says the benchmark could not run, and why.
pub fn report_failure(why: &str) {
    if bench_mode() {
        let json = format!(
            r#"{{"error": {}}}"#,
            serde_json::Value::String(why.to_string())
        );
        ui().bench.set(Some((json, String::new())));
    }
}

/// Warm up 3 calls, then time up to 20 (at least 5, at most ~10 s); median over the runs.
pub async fn run_bench() {
    let ui = ui();
    let Some(model) = loading::model() else {
        return;
    };
    let batch = query_param("batch")
        .and_then(|b| b.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    ui.status
        .set(format!("Benchmark: batch {batch}, warming up…"));
    let Some((ctx, adapter)) = with_engine(|e| (e.session.ctx().clone(), e.session.adapter_name()))
    else {
        return;
    };
    let result: crate::Result<(f64, Vec<f64>, u64)> = async {
        let unet = crate::unet::UNet::new(&ctx, &model.config, &model.weights, batch)?;
        let ts = vec![500.0f32; batch];
        let labels = model.config.num_class_embeds.map(|_| vec![0u32; batch]);
        unet.set_inputs(&ctx, None, &ts, labels.as_deref())?;
        for _ in 0..3 {
            ctx.run(unet.program())?;
            ctx.finish().await?;
        }
        let mut times = Vec::new();
        let t_start = now_ms();
        while times.len() < 20 && (times.len() < 5 || now_ms() - t_start < 10_000.0) {
            let t0 = now_ms();
            ctx.run(unet.program())?;
            ctx.finish().await?;
            times.push(now_ms() - t0);
            ui.status
                .set(format!("Benchmark: batch {batch}, run {}", times.len()));
        }
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Ok((sorted[sorted.len() / 2], times, unet.flops))
    }
    .await;
    match result {
        Ok((median, times, flops)) => {
            let gflops = flops as f64 / (median * 1e6);
            let json = format!(
                r#"{{"adapter": {}, "batch": {batch}, "median_ms": {median:.3}, "gflops": {gflops:.3}}}"#,
                serde_json::Value::String(adapter.clone())
            );
            let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
            let table = format!(
                "adapter\t{adapter}\nbatch\t{batch}\nruns\t{}\nmedian\t{median:.2} ms\nfastest\t{min:.2} ms\nwork\t{:.3} GFLOP per call\nspeed\t{gflops:.2} GFLOP/s",
                times.len(),
                flops as f64 / 1e9
            );
            ui.bench.set(Some((json, table)));
            ui.status
                .set(format!("Benchmark done: {median:.2} ms median"));
        }
        Err(e) => {
            report_error(&e);
            report_failure(&e.to_string());
        }
    }
}
