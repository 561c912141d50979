//! A stage's preflight, before its units start: images into podman storage
//! (loaded from the archive or pulled on a cold start, see
//! [`crate::images`]) and the host checks of `doctor` (ports free,
//! volumes present, ...). Services whose unit already runs need none (a
//! daemon restarted in the middle, a second `recover`: their ports are
//! theirs, their images in use). A definite problem keeps the stage from
//! starting with the same message `doctor` gives; what cannot be told
//! (podman not answering) is a warning: the unit start is the real test,
//! and its journal's diagnosis names a missing image.
//!
//! The daemon asks podman through transient units of the manager it
//! drives ([`PodmanRunner::Transient`]): its own hardened unit hides the
//! image store and forbids the user namespace rootless podman needs, so an
//! answer from inside it would be about the wrong storage. An operator's
//! `recover` runs podman directly.

use tracing::warn;

use crate::config::Config;
use crate::drive::Systemd;
use crate::engine::SvcId;
use crate::images::PodmanRunner;

/// Per service, what keeps it from starting (empty: the stage may start).
pub(super) async fn run(
    cfg: &Config,
    sd: Option<&Systemd>,
    podman: &PodmanRunner,
    stage: &str,
    members: &[(SvcId, String, Option<String>)],
) -> Vec<(SvcId, String)> {
    let mut idle: Vec<(SvcId, String)> = Vec::new();
    for (id, name, unit) in members {
        let active = match (sd, unit) {
            (Some(sd), Some(unit)) => sd.unit_state(unit).await.is_ok_and(|st| st.is_active()),
            _ => false,
        };
        if !active {
            idle.push((*id, name.clone()));
        }
    }
    if idle.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = idle.iter().map(|(_, n)| n.clone()).collect();
    let id_of = |n: &str| idle.iter().find(|(_, m)| m == n).map(|(i, _)| *i);
    match crate::images::ensure_images_via(cfg, &names, podman).await {
        Ok(_) => {}
        Err(e) if e.cannot_tell() => {
            warn!(stage, error = %e, "cannot check images with podman; starting anyway (unknown is not missing)");
        }
        Err(e) => {
            return e
                .by_service(&names)
                .into_iter()
                .filter_map(|(n, msg)| id_of(&n).map(|i| (i, msg)))
                .collect();
        }
    }
    let failures: Vec<String> = crate::doctor::preflight_services(cfg, &names)
        .await
        .into_iter()
        .filter(|f| f.status == crate::doctor::Status::Fail)
        .map(|f| match f.remedy {
            Some(r) => format!("preflight {}: {} -> {r}", f.check, f.explanation),
            None => format!("preflight {}: {}", f.check, f.explanation),
        })
        .collect();
    if failures.is_empty() {
        return Vec::new();
    }
    let msg = failures.join("; ");
    idle.into_iter().map(|(i, _)| (i, msg.clone())).collect()
}

/// The part of [`run`] that does not depend on earlier stages, for the next
/// stage while this one is gated: true when every image is present and no
/// host check fails, so the next stage needs no preflight of its own.
pub(super) async fn ahead(cfg: &Config, podman: &PodmanRunner, services: &[String]) -> bool {
    if services.is_empty() {
        return false;
    }
    matches!(
        crate::images::all_present_via(cfg, services, podman).await,
        Ok(true)
    ) && crate::doctor::preflight_services(cfg, services)
        .await
        .iter()
        .all(|f| f.status != crate::doctor::Status::Fail)
}
