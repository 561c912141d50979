//! A unit's state as read from systemd's D-Bus properties, and how D-Bus
//! property values (and `PropertiesChanged` deltas) update it.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

/// The D-Bus interface of every unit object.
pub(crate) const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
/// The D-Bus interface of service unit objects.
pub(crate) const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

/// The state of one unit, as systemd reports it.
///
/// Timestamps are CLOCK_REALTIME microseconds since the epoch, 0 when the
/// event never happened. `main_pid` and `n_restarts` are 0 for units that are
/// not services.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    /// `LoadState`: `loaded`, `not-found`, `error`, `bad-setting`, `masked`, ...
    pub load_state: String,
    /// `ActiveState`: `active`, `reloading`, `inactive`, `failed`, `activating`,
    /// `deactivating`, ...
    pub active_state: String,
    /// `SubState`, type specific: `running`, `exited`, `dead`, `auto-restart`, ...
    pub sub_state: String,
    /// `ActiveEnterTimestamp` (µs since the epoch).
    pub active_enter_usec: u64,
    /// `InactiveExitTimestamp` (µs since the epoch).
    pub inactive_exit_usec: u64,
    /// `MainPID` of a service, 0 when none.
    pub main_pid: u32,
    /// `NRestarts` of a service: automatic restarts since the last manual start.
    pub n_restarts: u32,
    /// `Result` of a service: `success` until something failed since its
    /// last start (`exit-code`, `signal`, `core-dump`, `timeout`, ...); set
    /// as soon as the main process dies, before the stop commands run.
    /// Empty for units that are not services.
    pub result: String,
}

impl UnitState {
    /// `ActiveState == "active"`.
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }

    /// `ActiveState == "failed"`.
    pub fn is_failed(&self) -> bool {
        self.active_state == "failed"
    }

    /// `LoadState == "not-found"`.
    pub fn is_not_found(&self) -> bool {
        self.load_state == "not-found"
    }
}

/// One of the properties that make up a [`UnitState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    LoadState,
    ActiveState,
    SubState,
    ActiveEnter,
    InactiveExit,
    MainPid,
    NRestarts,
    Result,
}

/// How many [`Field`]s there are.
pub(crate) const FIELDS: usize = 8;

impl Field {
    /// The field for property `name` of `interface`, if it is one we track.
    pub(crate) fn of(interface: &str, name: &str) -> Option<Field> {
        match (interface, name) {
            (UNIT_IFACE, "LoadState") => Some(Field::LoadState),
            (UNIT_IFACE, "ActiveState") => Some(Field::ActiveState),
            (UNIT_IFACE, "SubState") => Some(Field::SubState),
            (UNIT_IFACE, "ActiveEnterTimestamp") => Some(Field::ActiveEnter),
            (UNIT_IFACE, "InactiveExitTimestamp") => Some(Field::InactiveExit),
            (SERVICE_IFACE, "MainPID") => Some(Field::MainPid),
            (SERVICE_IFACE, "NRestarts") => Some(Field::NRestarts),
            (SERVICE_IFACE, "Result") => Some(Field::Result),
            _ => None,
        }
    }

    /// Store `value` in `state`. Returns false when the value has the wrong type.
    pub(crate) fn set(self, state: &mut UnitState, value: &Variant<'_>) -> bool {
        match self {
            Field::LoadState => set_str(&mut state.load_state, value),
            Field::ActiveState => set_str(&mut state.active_state, value),
            Field::SubState => set_str(&mut state.sub_state, value),
            Field::ActiveEnter => set_u64(&mut state.active_enter_usec, value),
            Field::InactiveExit => set_u64(&mut state.inactive_exit_usec, value),
            Field::MainPid => set_u32(&mut state.main_pid, value),
            Field::NRestarts => set_u32(&mut state.n_restarts, value),
            Field::Result => set_str(&mut state.result, value),
        }
    }
}

fn inner<'a>(value: &'a Variant<'a>) -> &'a Variant<'a> {
    match value {
        Variant::Variant(v) => v,
        v => v,
    }
}

fn set_str(slot: &mut String, value: &Variant<'_>) -> bool {
    match <&str>::try_from(inner(value)) {
        Ok(s) => {
            s.clone_into(slot);
            true
        }
        Err(_) => false,
    }
}

fn set_u64(slot: &mut u64, value: &Variant<'_>) -> bool {
    match u64::try_from(inner(value)) {
        Ok(v) => {
            *slot = v;
            true
        }
        Err(_) => false,
    }
}

fn set_u32(slot: &mut u32, value: &Variant<'_>) -> bool {
    match u32::try_from(inner(value)) {
        Ok(v) => {
            *slot = v;
            true
        }
        Err(_) => false,
    }
}

/// Fill the `Unit`-interface fields of `state` from a `GetAll` reply.
/// Returns the names of tracked properties that were missing or mistyped.
pub(crate) fn apply_unit_props(
    state: &mut UnitState,
    props: &HashMap<String, OwnedVariant>,
) -> Vec<&'static str> {
    const NAMES: [&str; 5] = [
        "LoadState",
        "ActiveState",
        "SubState",
        "ActiveEnterTimestamp",
        "InactiveExitTimestamp",
    ];
    let mut bad = Vec::new();
    for name in NAMES {
        let ok = match (Field::of(UNIT_IFACE, name), props.get(name)) {
            (Some(field), Some(v)) => match Variant::try_from(v) {
                Ok(v) => field.set(state, &v),
                Err(_) => false,
            },
            _ => false,
        };
        if !ok {
            bad.push(name);
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut s = UnitState::default();
        assert!(Field::ActiveState.set(&mut s, &Variant::from("active")));
        assert!(Field::ActiveEnter.set(&mut s, &Variant::U64(17)));
        assert!(Field::MainPid.set(&mut s, &Variant::U32(42)));
        assert!(!Field::MainPid.set(&mut s, &Variant::from("x")));
        assert_eq!(s.active_state, "active");
        assert_eq!(s.active_enter_usec, 17);
        assert_eq!(s.main_pid, 42);
        assert!(s.is_active());
        assert_eq!(
            Field::of(SERVICE_IFACE, "NRestarts"),
            Some(Field::NRestarts)
        );
        assert_eq!(Field::of(UNIT_IFACE, "NRestarts"), None);
    }
}
