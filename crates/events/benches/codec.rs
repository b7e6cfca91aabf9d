//! Encode and parse+typecheck throughput of one event line.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use master_events_events::{catalog::*, Envelope, Record, Timestamp};

fn sample() -> Record {
    Record::from_parts(
        Envelope {
            seq: Some(123_456),
            ts: Some(Timestamp::from_micros(1_333_576_052_926_554)),
            origin: Some("n_0@10.17.2.163".into()),
            origin_ts: None,
            origin_seq: Some(4242),
        },
        VbucketMoveStart {
            vbucket: 43,
            pid: "<0.533.0>".into(),
            node: "n_0@10.17.2.163".into(),
            bucket: "default".into(),
            chain_before: vec!["10.17.2.163:12002".into(), "10.17.2.163:12004".into()],
            chain_after: vec!["10.17.2.163:12000".into(), "10.17.2.163:12004".into()],
        },
    )
}

fn codec(c: &mut Criterion) {
    let rec = sample();
    let line = rec.to_line();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            rec.encode_line(&mut buf);
            std::hint::black_box(&buf);
        })
    });
    group.bench_function("parse_typecheck", |b| {
        b.iter(|| std::hint::black_box(Record::parse(std::hint::black_box(&line))))
    });
    group.finish();
    println!("line length: {} bytes", line.len());
}

criterion_group!(benches, codec);
criterion_main!(benches);
