//! What every value of a service must satisfy to be written into its unit,
//! per backend: the one place these rules live. The configuration loader
//! calls [`check_service`] for the backends the configuration may use (and
//! turns a failure into a `file:line:col` error); [`super::render`] calls it
//! again as a backstop for configurations that did not come from the loader
//! or are rendered with another backend (`render --backend quadlet`).
//!
//! The rules are built from the escaping functions of [`super::escape`]:
//!
//! - `description`: [`escape::plain`] (no control characters, no trailing
//!   backslash).
//! - values podman receives as an argument of their own (image, container
//!   name, network, published ports, volumes, `--user`): not empty, not
//!   starting with `-` ([`escape::podman_operand`]).
//! - service backend: every word of `podman run` through
//!   [`escape::exec_word`] (only control characters fail).
//! - quadlet backend: `Image=`, `ContainerName=`, `Network=`,
//!   `PublishPort=`, `Volume=`, `User=`/`Group=` through
//!   [`escape::quadlet_raw`]; `Environment=`, `PodmanArgs=` and `Exec=`
//!   words through [`escape::quadlet_exec_word`] (no empty word, no lone
//!   `;`); no value quadlet would read as a reference to another quadlet
//!   unit ([`escape::quadlet_unit_suffix`]).

use std::fmt;

use super::escape::{self, EscapeError};
use super::Backend;
use crate::config::{Container, Network, Service};

/// Which value of a service a rule failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `description`.
    Description,
    /// `image` (with `image_prefix` applied).
    Image,
    /// `container_name` (default: the service name).
    ContainerName,
    /// `network`.
    Network,
    /// `ports[i]`.
    Port(usize),
    /// `volumes[i]`.
    Volume(usize),
    /// `user`.
    User,
    /// `env.KEY`.
    Env(String),
    /// `podman_args[i]`.
    PodmanArg(usize),
    /// `command[i]`.
    Command(usize),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Description => f.write_str("description"),
            Field::Image => f.write_str("image"),
            Field::ContainerName => f.write_str("container name"),
            Field::Network => f.write_str("network"),
            Field::Port(i) => write!(f, "port {}", i + 1),
            Field::Volume(i) => write!(f, "volume {}", i + 1),
            Field::User => f.write_str("user"),
            Field::Env(k) => write!(f, "environment variable {k}"),
            Field::PodmanArg(i) => write!(f, "argument {} of podman_args", i + 1),
            Field::Command(i) => write!(f, "argument {} of command", i + 1),
        }
    }
}

/// A failed rule: the value and why.
pub type Violation = (Field, EscapeError);

/// Check every value of `svc` that reaches its unit with `backend`. The
/// quadlet rules include the service backend's, so checking `Quadlet` covers
/// both.
pub fn check_service(svc: &Service, backend: Backend) -> Result<(), Violation> {
    if let Some(d) = &svc.description {
        escape::plain(d).map_err(|e| (Field::Description, e))?;
    }
    match &svc.container {
        Some(c) => check_container(c, backend),
        None => Ok(()),
    }
}

fn at(field: Field) -> impl FnOnce(EscapeError) -> Violation {
    move |e| (field, e)
}

/// A word of `podman run` or a quadlet setting copied verbatim.
fn raw(value: &str, quadlet: Option<&'static str>) -> Result<(), EscapeError> {
    match quadlet {
        Some(setting) => escape::quadlet_raw(value, setting).map(drop),
        None => escape::exec_word(value).map(drop),
    }
}

/// A word of a command line (quadlet: `Exec=`, `PodmanArgs=`, `Environment=`).
fn word(value: &str, quadlet: bool) -> Result<(), EscapeError> {
    if quadlet {
        escape::quadlet_exec_word(value).map(drop)
    } else {
        escape::exec_word(value).map(drop)
    }
}

fn check_container(c: &Container, backend: Backend) -> Result<(), Violation> {
    let quadlet = backend == Backend::Quadlet;
    let q = |setting: &'static str| quadlet.then_some(setting);

    escape::podman_operand(&c.image, "image").map_err(at(Field::Image))?;
    raw(&c.image, q("quadlet Image=")).map_err(at(Field::Image))?;
    if quadlet {
        escape::quadlet_unit_suffix(&c.image, &[".image", ".build"], "quadlet Image=")
            .map_err(at(Field::Image))?;
    }

    escape::podman_operand(&c.name, "container name").map_err(at(Field::ContainerName))?;
    raw(&c.name, q("quadlet ContainerName=")).map_err(at(Field::ContainerName))?;

    if let Network::Named(n) = &c.network {
        escape::podman_operand(n, "network").map_err(at(Field::Network))?;
        raw(n, q("quadlet Network=")).map_err(at(Field::Network))?;
        if quadlet {
            escape::quadlet_unit_suffix(n, &[".network"], "quadlet Network=")
                .map_err(at(Field::Network))?;
        }
    }

    for (i, p) in c.ports.iter().enumerate() {
        escape::podman_operand(&p.raw, "published port").map_err(at(Field::Port(i)))?;
        raw(&p.raw, q("quadlet PublishPort=")).map_err(at(Field::Port(i)))?;
    }

    for (i, v) in c.volumes.iter().enumerate() {
        escape::podman_operand(&v.raw, "volume").map_err(at(Field::Volume(i)))?;
        raw(&v.raw, q("quadlet Volume=")).map_err(at(Field::Volume(i)))?;
        if quadlet && !v.host.starts_with('/') {
            escape::quadlet_unit_suffix(&v.host, &[".volume"], "quadlet Volume=")
                .map_err(at(Field::Volume(i)))?;
        }
    }

    if let Some(user) = &c.user {
        escape::podman_operand(user, "user").map_err(at(Field::User))?;
        if quadlet {
            // Written as `User=` and `Group=` (see `quadlet_body`).
            let (uid, gid) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user.as_str(), None),
            };
            escape::quadlet_raw(uid, "quadlet User=").map_err(at(Field::User))?;
            if let Some(g) = gid {
                escape::quadlet_raw(g, "quadlet Group=").map_err(at(Field::User))?;
            }
        } else {
            escape::exec_word(user).map_err(at(Field::User))?;
        }
    }

    for (k, v) in &c.env {
        word(&format!("{k}={v}"), quadlet).map_err(at(Field::Env(k.clone())))?;
    }
    for (i, a) in c.podman_args.iter().enumerate() {
        word(a, quadlet).map_err(at(Field::PodmanArg(i)))?;
    }
    for (i, a) in c.command.iter().enumerate() {
        word(a, quadlet).map_err(at(Field::Command(i)))?;
    }
    Ok(())
}
