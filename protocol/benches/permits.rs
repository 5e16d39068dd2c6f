//! The cost of a permission check, as recorded in BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p teamhub-protocol --bench permits
//! ```
//!
//! `permits` alone, and what `Node::authorize` does for every REST call and WebSocket
//! op: look the team up in the identity's grants (`Identity::role_in`, an
//! `Arc<BTreeMap<TeamId, Role>>` looked up by `&str`), then ask `permits`, for tokens
//! carrying 1, 10 and 100 teams; plus the refusal, which formats its message.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use teamhub_protocol::{Action, Role, TeamId, permits};

/// The grants of an identity with `n` teams (`team-000` ... ), roles cycling.
fn grants(n: usize) -> Arc<BTreeMap<TeamId, Role>> {
    let roles = [Role::Viewer, Role::Editor, Role::Admin, Role::Owner];
    Arc::new(
        (0..n)
            .map(|i| (TeamId::new(&format!("team-{i:03}")).unwrap(), roles[i % 4]))
            .collect(),
    )
}

/// `Node::authorize` without the node: role lookup, `permits`, and the refusal message.
fn authorize(grants: &BTreeMap<TeamId, Role>, team: &str, action: Action) -> Result<Role, String> {
    let role = grants.get(team).copied();
    match role {
        Some(r) if permits(role, action) => Ok(r),
        Some(r) => Err(format!("role {r} in team {team} does not allow this")),
        None => Err(format!("no role in team {team}")),
    }
}

fn bench(c: &mut Criterion) {
    c.bench_function("permits", |b| {
        b.iter(|| {
            permits(
                black_box(Some(Role::Admin)),
                black_box(Action::ReadActivity),
            )
        })
    });
    let mut group = c.benchmark_group("authorize");
    for n in [1, 10, 100] {
        let g = grants(n);
        // The last team (an owner or admin role for n = 100: 99 % 4 = 3, owner).
        let team = format!("team-{:03}", n - 1);
        group.bench_with_input(BenchmarkId::new("allowed", n), &n, |b, _| {
            b.iter(|| authorize(black_box(&g), black_box(&team), Action::Join))
        });
        group.bench_with_input(BenchmarkId::new("no_role", n), &n, |b, _| {
            b.iter(|| authorize(black_box(&g), black_box("elsewhere"), Action::Join))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
