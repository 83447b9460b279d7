//! Whether the CRM's writes still reach the disk, and what is done once one did not.
//!
//! A failed write-back (`EIO` from a sync: a thin-provisioned or network volume that ran out of
//! space, a failing disk) is reported once. Linux then keeps the pages it could not write in its
//! cache, marked clean, with the data the CRM wrote: every program that reads the database sees
//! it, SQLite's recovery and `crm verify` included, though it is not on the disk, and a later sync
//! that succeeds does not write it again. So once a sync fails:
//!
//! - this run serves nothing more from the database (writes would be built on pages that may not
//!   exist on the disk; reads would show commits whose callers were told they failed), and
//!   checkpoints stop (they would copy such data into the database file);
//! - a marker file beside the database records the failure and the boot it happened in. While the
//!   machine has not been rebooted, every command refuses the database: only a reboot (or an
//!   unmount and mount of its file system, after which the operator deletes the marker) shows
//!   what really is on the disk. After a reboot `crm verify` must pass before anything else opens
//!   it; a pass removes the marker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::StoreError;

/// Where the linux kernel names the current boot; it changes with every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub struct Durability {
    failed: AtomicBool,
    marker: PathBuf,
}

impl Durability {
    pub fn new(database: &Path) -> Durability {
        Durability {
            failed: AtomicBool::new(false),
            marker: marker_path(database),
        }
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Records that a write may not have reached the disk: from now on nothing is served from the
    /// database, and the marker keeps the next runs from trusting what the OS shows of it.
    pub fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.failed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            %error,
            marker = %self.marker.display(),
            "{what} failed: the CRM stops serving from the database. Reboot the machine (or unmount and \
             mount its file system, then delete the marker file), run `crm verify --full`, then start the CRM"
        );
        if let Err(e) = self.write_marker(what, error) {
            tracing::error!(error = %e, marker = %self.marker.display(), "could not write the marker file");
        }
    }

    /// Creates the marker, writes its text and syncs both it and its folder, each step tried
    /// even when one before it failed: on a failing disk the name alone is worth having (see
    /// [`marker`] for one without its text).
    fn write_marker(&self, what: &str, error: &dyn std::fmt::Display) -> std::io::Result<()> {
        let mut file = std::fs::File::create(&self.marker)?;
        let text = self.write_text(&mut file, what, error).and_then(|()| file.sync_all());
        let name = match self.marker.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
            None => Ok(()),
        };
        text.and(name)
    }

    fn write_text(&self, file: &mut std::fs::File, what: &str, error: &dyn std::fmt::Display) -> std::io::Result<()> {
        write!(
            file,
            "# {what} failed at {} ({error}).\n\
             # The operating system may still hold, in memory, data that never reached the disk, and show it\n\
             # to any program that reads the database. The CRM refuses the database until the machine has\n\
             # been rebooted; then `crm verify` must pass (it removes this file). After an unmount and mount\n\
             # of the file system instead of a reboot, delete this file and run `crm verify --full`.\n\
             boot_id={}\n",
            super::now(),
            boot_id().unwrap_or_default()
        )
    }

    /// The error for every read and write once [`Durability::fail`] has been called.
    pub fn refusal(&self) -> StoreError {
        StoreError::Other(anyhow::anyhow!(
            "a write to the disk failed earlier: the CRM serves nothing from the database until the machine has \
             been rebooted and `crm verify` has passed (see {})",
            self.marker.display()
        ))
    }
}

fn marker_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-write-failed");
    PathBuf::from(name)
}

fn boot_id() -> Option<String> {
    Some(std::fs::read_to_string(BOOT_ID).ok()?.trim().to_string()).filter(|id| !id.is_empty())
}

/// What the marker beside `database` says, if there is one.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    None,
    /// Written in an earlier boot: what the OS shows is what is on the disk, still unverified.
    Rebooted,
}

/// Refuses the database while a write that failed in this boot may still be shown from memory;
/// otherwise says whether a failure is still to be verified.
pub fn marker(database: &Path) -> anyhow::Result<Marker> {
    let path = marker_path(database);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Marker::None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let written_in = text
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .map(str::trim)
        .filter(|id| !id.is_empty());
    match (written_in, boot_id()) {
        (Some(then), Some(now)) if then != now => Ok(Marker::Rebooted),
        (Some(_), Some(_)) => anyhow::bail!(
            "{}: a write to the disk failed while the CRM was running, and the machine has not been rebooted \
             since, so what the system shows of the database may not be on the disk. Reboot (or unmount and \
             mount the file system, then delete that file and run `crm verify --full`)",
            path.display()
        ),
        // The marker's text did not reach the disk, or this system names no boot.
        _ => anyhow::bail!(
            "{}: a write to the disk failed while the CRM was running, and the CRM cannot tell whether the \
             machine has been rebooted since. Once it has (or the file system has been unmounted and mounted), \
             delete that file and run `crm verify --full`",
            path.display()
        ),
    }
}

/// Refuses a database whose failed write has not been verified since (see [`marker`]); for every
/// command but `crm verify`.
pub fn require_verified(database: &Path) -> anyhow::Result<()> {
    match marker(database)? {
        Marker::None => Ok(()),
        Marker::Rebooted => anyhow::bail!(
            "{}: a write to the disk failed before the last reboot; run `crm verify` (which removes that file \
             when the database passes), or restore the newest backup if it does not",
            marker_path(database).display()
        ),
    }
}

/// After a `crm verify` that passed: the failure is behind us.
pub fn clear(database: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(database)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
