//! The directory watcher on a real file system (inotify): an editor's burst of saves,
//! renames and temp files wakes the loop once; hidden/temp churn alone wakes it never; a
//! ConfigMap `..data` swap and a swapped root symlink both wake it, and after a root swap
//! edits in the new target are still seen.

use berth::source::watch::{self, WatchTiming};
use berth::source::Waker;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn counting_waker() -> (Waker, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    (
        Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
        count,
    )
}

/// Lets the watcher settle: longer than the settle window of the default timing.
async fn quiet() {
    tokio::time::sleep(Duration::from_millis(900)).await;
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// What vim does on `:w` with default settings: probe file, swap file churn, rename the
/// original to a backup, write the new file, delete the backup.
fn vim_save(dir: &Path, name: &str, text: &str) {
    write(&dir.join("4913"), "");
    std::fs::remove_file(dir.join("4913")).unwrap();
    write(&dir.join(format!(".{name}.swp")), "swap");
    let backup = dir.join(format!("{name}~"));
    let _ = std::fs::rename(dir.join(name), &backup);
    write(&dir.join(name), text);
    let _ = std::fs::remove_file(backup);
}

#[tokio::test]
async fn twenty_rapid_saves_wake_the_loop_once() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("web.yaml"), "image: v1\n");
    let (waker, wakes) = counting_waker();
    let task = tokio::spawn(
        watch::watch(dir.path().to_path_buf(), WatchTiming::default(), waker).unwrap(),
    );
    quiet().await;
    for i in 0..20 {
        vim_save(dir.path(), "web.yaml", &format!("image: v1 # save {i}\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(dir.path().join(".web.yaml.swp")).unwrap();
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test]
async fn hidden_temp_and_unchanged_files_never_wake() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("web.yaml"), "image: v1\n");
    let (waker, wakes) = counting_waker();
    let task = tokio::spawn(
        watch::watch(dir.path().to_path_buf(), WatchTiming::default(), waker).unwrap(),
    );
    quiet().await;
    write(&dir.path().join(".web.yaml.swp"), "x");
    write(&dir.path().join("web.yaml~"), "x");
    write(&dir.path().join("#web.yaml#"), "x");
    write(&dir.path().join("notes.txt"), "x");
    write(&dir.path().join("web.yaml.tmp"), "x");
    // Same content rewritten: same revision.
    write(&dir.path().join("web.yaml"), "image: v1\n");
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
    // A new spec file does wake it; deleting it again too.
    write(&dir.path().join("api.yaml"), "image: a\n");
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    std::fs::remove_file(dir.path().join("api.yaml")).unwrap();
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
    task.abort();
}

#[tokio::test]
async fn configmap_data_swap_wakes_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2024_01")).unwrap();
    write(&root.join("..2024_01/web.yaml"), "image: v1\n");
    std::os::unix::fs::symlink("..2024_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
    let (waker, wakes) = counting_waker();
    let task =
        tokio::spawn(watch::watch(root.to_path_buf(), WatchTiming::default(), waker).unwrap());
    quiet().await;
    // kubelet's atomic writer: new timestamped dir, new link renamed over ..data, old dir gone.
    std::fs::create_dir(root.join("..2024_02")).unwrap();
    write(&root.join("..2024_02/web.yaml"), "image: v2\n");
    std::os::unix::fs::symlink("..2024_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2024_01")).unwrap();
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test]
async fn a_swapped_root_symlink_is_followed_and_rewatched() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir(base.join("v1")).unwrap();
    std::fs::create_dir(base.join("v2")).unwrap();
    write(&base.join("v1/web.yaml"), "image: v1\n");
    write(&base.join("v2/web.yaml"), "image: v2\n");
    std::os::unix::fs::symlink("v1", base.join("current")).unwrap();
    let (waker, wakes) = counting_waker();
    let task =
        tokio::spawn(watch::watch(base.join("current"), WatchTiming::default(), waker).unwrap());
    quiet().await;
    // `ln -sfn v2 tmp && mv -T tmp current`
    std::os::unix::fs::symlink("v2", base.join("current.tmp")).unwrap();
    std::fs::rename(base.join("current.tmp"), base.join("current")).unwrap();
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "the swap itself");
    // Edits in the new target are watched; edits in the old one no longer matter.
    write(&base.join("v2/web.yaml"), "image: v3\n");
    quiet().await;
    assert_eq!(wakes.load(Ordering::SeqCst), 2, "an edit after the swap");
    write(&base.join("v1/web.yaml"), "image: old\n");
    quiet().await;
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        2,
        "the old target is not the source"
    );
    task.abort();
}
