//! spec benchmarks: how fast hostile input is refused and how fast real specs parse.
//! Run with `cargo bench --bench spec`.

use berth::spec::{load_files, parse_file, MAX_FILE_BYTES, MAX_FLOW_DEPTH};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HEAD: &str = "apiVersion: v1\nkind: App\nmetadata:\n  name: evil\nspec:\n  image: x\n  ports: [{containerPort: 80}]\n";

fn billion_laughs(levels: usize, width: usize) -> String {
    let mut s = String::from(HEAD);
    s.push_str("  command: &l0 [\"lol\"]\n");
    for level in 1..levels {
        let refs = vec![format!("*l{}", level - 1); width].join(", ");
        s.push_str(&format!("  x{level}: &l{level} [{refs}]\n"));
    }
    s
}

fn examples() -> Vec<(PathBuf, String)> {
    vec![
        (
            "web.yaml".into(),
            include_str!("../examples/apps/web.yaml").into(),
        ),
        (
            "worker.yaml".into(),
            include_str!("../examples/apps/worker.yaml").into(),
        ),
        (
            "api.yaml".into(),
            include_str!("../examples/apps/api.yaml").into(),
        ),
    ]
}

/// Just under 1 MiB of tokens at the deepest flow nesting the screen lets through: the most
/// work the YAML parser can be made to do.
fn worst_allowed_flow() -> String {
    let mut s = format!("{HEAD}  x: {}", "[".repeat(MAX_FLOW_DEPTH));
    while s.len() + MAX_FLOW_DEPTH + 10 < MAX_FILE_BYTES {
        s.push_str("1,");
    }
    s.push('1');
    s.push_str(&"]".repeat(MAX_FLOW_DEPTH));
    s.push('\n');
    s
}

/// Just under 1 MiB of valid App documents.
fn many_apps() -> String {
    let doc = include_str!("../examples/apps/web.yaml");
    let mut s = String::new();
    let mut n = 0;
    while s.len() + doc.len() + 10 < MAX_FILE_BYTES {
        s.push_str("---\n");
        s.push_str(&doc.replace("name: web", &format!("name: web-{n}")));
        n += 1;
    }
    s
}

/// Just under 1 MiB of one app with ~48k duplicate ports: the most validation problems one
/// document can produce (50 of them are located and reported).
fn many_problems() -> String {
    let mut s = HEAD.replace("  ports: [{containerPort: 80}]\n", "  ports:\n");
    while s.len() < MAX_FILE_BYTES - 100 {
        s.push_str("  - containerPort: 81\n");
    }
    s
}

/// Just under 1 MiB of documents that all define the same app.
fn same_name() -> Vec<(PathBuf, String)> {
    let doc = format!("---\n{HEAD}");
    vec![("same.yaml".into(), doc.repeat(MAX_FILE_BYTES / doc.len()))]
}

fn bench(c: &mut Criterion) {
    let file = Path::new("bench.yaml");
    let bomb = billion_laughs(10, 10);
    let small_bomb = billion_laughs(6, 8);
    let flow = format!(
        "{HEAD}  command: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let block = format!("{HEAD}  command:\n  {}x\n", "- ".repeat(10_000));
    let big = format!(
        "{HEAD}{}",
        "# padding padding padding padding\n".repeat(5 * 1024 * 1024 / 34)
    );
    let worst = worst_allowed_flow();
    let many = many_apps();
    let examples = examples();
    let problems = many_problems();
    let same = same_name();

    let mut g = c.benchmark_group("spec");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("reject alias bomb 10x10 (alias cap)", |b| {
        b.iter(|| parse_file(file, black_box(&bomb)))
    });
    g.bench_function("reject alias bomb 6x8 (typed schema)", |b| {
        b.iter(|| parse_file(file, black_box(&small_bomb)))
    });
    g.bench_function("reject 10k-deep flow nesting", |b| {
        b.iter(|| parse_file(file, black_box(&flow)))
    });
    g.bench_function("reject 10k-deep block nesting", |b| {
        b.iter(|| parse_file(file, black_box(&block)))
    });
    g.bench_function("reject 5 MB file", |b| {
        b.iter(|| parse_file(file, black_box(&big)))
    });
    g.bench_function("load examples/apps (3 files)", |b| {
        b.iter(|| load_files(black_box(&examples)))
    });
    g.sample_size(10);
    g.bench_function(
        "1 MiB of tokens at max flow depth (accepted by screen)",
        |b| b.iter(|| parse_file(file, black_box(&worst))),
    );
    g.bench_function("1 MiB of valid apps", |b| {
        b.iter(|| parse_file(file, black_box(&many)))
    });
    g.bench_function("1 MiB, one app, 48k duplicate ports", |b| {
        b.iter(|| parse_file(file, black_box(&problems)))
    });
    g.bench_function("1 MiB, 10k documents with the same name", |b| {
        b.iter(|| load_files(black_box(&same)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
