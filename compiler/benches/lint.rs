//! Benchmark: full analysis (decode, YAML, schema, types, rules) of generated
//! repositories of 100, 1,000 and 10,000 services (`meshc_compiler::synth`).
//!
//! Run: `cargo bench -p meshc-compiler --bench lint`.
//!
//! It allocates with mimalloc, as `meshc lint` does (`src/memory.rs`; the
//! binary also turns purging off, which matters less here, where each
//! sample frees what the last one built).

use meshc_compiler::{Input, Options, analyze, synth};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

fn inputs(files: &[(String, String)]) -> Vec<Input> {
    files
        .iter()
        .map(|(p, t)| Input::new(p.clone(), t.clone()))
        .collect()
}

#[divan::bench(args = [100, 1_000, 10_000], sample_count = 5, sample_size = 1)]
fn analyze_repository(bencher: divan::Bencher, services: usize) {
    let files = synth::repository(services);
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    eprintln!(
        "{services} services: {} files, {} bytes",
        files.len(),
        bytes
    );
    bencher
        .with_inputs(|| inputs(&files))
        .counter(divan::counter::BytesCount::new(bytes))
        .bench_values(|inputs| {
            let a = analyze(inputs, &Options::default());
            assert!(a.diagnostics.is_empty());
            a.resources.len()
        });
}

/// What `meshc compile --hash` does: analyse, lower, hash the IR.
#[divan::bench(args = [1_000, 10_000], sample_count = 5, sample_size = 1)]
fn compile_and_hash(bencher: divan::Bencher, services: usize) {
    let files = synth::repository(services);
    bencher
        .with_inputs(|| inputs(&files))
        .bench_values(|inputs| {
            let compiled = meshc_compiler::compile(inputs, &Options::default());
            compiled.ir.as_ref().expect("the repository lowers").hash()
        });
}
