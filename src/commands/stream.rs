//! `netc run --format jsonl|csv`: inputs (folders expanded) streamed through the model a batch at
//! a time, results printed in input order as each batch completes.
//!
//! A reader thread decodes the next batch while the model runs this one; a channel of one batch
//! between them bounds the memory to about three batches of decoded inputs, whatever the number of
//! inputs. Inputs that cannot be read are reported and skipped (or, with `--strict`, stop the run).

use super::labels::Labels;
use super::run::{sample_names, InputSpec};
use super::top;
use anyhow::{bail, Context as _};
use netc_runtime::tensor::Dims;
use netc_runtime::Tensor;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::mpsc;

/// The file extensions a folder's inputs have (compared ignoring case).
const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "npy"];

/// How to stream.
pub struct Options {
    /// The most samples per run of the model.
    pub batch: usize,
    /// Stop at the first unreadable input.
    pub strict: bool,
    /// CSV rows rather than JSON lines.
    pub csv: bool,
    /// How many classes to print per input.
    pub top: usize,
    /// Where to write the logits of the samples that ran, `[N, classes]`, when the run completes.
    pub output: Option<PathBuf>,
}

/// The inputs the `--input` arguments stand for, in order: a folder's files with an input
/// extension sorted by name (subfolders not searched), a plain path as it is. Prints a note for
/// each folder with files left out.
pub fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        let cannot_list = || format!("cannot list folder {}", input.display());
        let (mut found, mut ignored, mut folders) = (Vec::new(), 0usize, 0usize);
        for entry in std::fs::read_dir(input).with_context(cannot_list)? {
            let path = entry.with_context(cannot_list)?.path();
            if path.is_dir() {
                folders += 1;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
            {
                found.push(path);
            } else {
                ignored += 1;
            }
        }
        if ignored > 0 || folders > 0 {
            let files = if ignored == 1 { "file" } else { "files" };
            let mut note = format!(
                "note: {}: ignored {ignored} {files} without a .jpg, .jpeg, .png or .npy extension",
                input.display()
            );
            if folders > 0 {
                note += &format!(
                    " and {folders} subfolder{} (not searched)",
                    if folders == 1 { "" } else { "s" }
                );
            }
            eprintln!("{note}");
        }
        if found.is_empty() {
            bail!("{}: the folder holds no .jpg, .jpeg, .png or .npy files", input.display());
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(found);
    }
    Ok(files)
}

/// One input of a batch: its file and its samples, or why it could not be read.
struct Item {
    path: PathBuf,
    read: Result<Tensor, String>,
}

/// Runs `infer` (the model: a batch in, its outputs out) over `inputs` a batch at a time and
/// prints the top classes of each sample to standard output. Returns how many inputs were skipped.
pub fn run(
    spec: &InputSpec,
    inputs: Vec<PathBuf>,
    options: &Options,
    labels: &Labels,
    infer: impl Fn(Tensor) -> anyhow::Result<Vec<Tensor>>,
) -> anyhow::Result<usize> {
    let total = inputs.len();
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "[{bar:40}] {pos}/{len} inputs ({elapsed} so far, {eta} left)",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let mut out = Printer { progress: progress.as_ref(), closed: false, logits: None };
    if let Some(path) = &options.output {
        // The logits go to an unnamed temporary file next to the output as the batches complete,
        // then into the .npy file (written atomically) when the run completes.
        let dir = netc_runtime::io::atomic::parent_dir(path);
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        out.logits = Some(Spool { file: std::io::BufWriter::new(file), rows: 0, classes: 0 });
    }
    if options.csv {
        out.stdout("image,rank,class,label,prob\n")?;
    }
    let (send, batches) = mpsc::sync_channel::<Vec<Item>>(1);
    let result = std::thread::scope(|scope| {
        scope.spawn(move || read_batches(spec, inputs, options.batch, &send));
        let mut skipped = 0;
        for mut batch in batches {
            // With --strict, the inputs before the first unreadable one still run and print.
            let failed = batch.iter().position(|item| item.read.is_err());
            let stop =
                options.strict.then_some(failed).flatten().map(|at| batch.split_off(at).swap_remove(0));
            skipped += run_batch(spec, batch, options, labels, &infer, &mut out)?;
            if let Some(Item { read: Err(error), .. }) = stop {
                bail!("{error} (--strict stops at the first input that cannot be read)");
            }
            if out.closed && out.logits.is_none() {
                break; // the reader of standard output is gone: nothing more to do
            }
        }
        Ok(skipped)
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let skipped = result?;
    if skipped > 0 {
        eprintln!("note: skipped {skipped} of {total} inputs that could not be read");
    }
    if let (Some(path), Some(spool)) = (&options.output, out.logits) {
        if spool.rows == 0 {
            bail!("no input could be read: nothing to write to {}", path.display());
        }
        let mut file =
            spool.file.into_inner().map_err(|e| e.into_error()).context("cannot spool the logits")?;
        std::io::Seek::rewind(&mut file).context("cannot spool the logits")?;
        netc_runtime::io::npy::write_from(path, &[spool.rows, spool.classes], &mut file)?;
    }
    Ok(skipped)
}

/// The reader thread: reads the inputs in order into batches of at most `batch` samples (an input
/// that would overflow a batch starts the next one) and sends them, until the receiver is gone.
fn read_batches(spec: &InputSpec, inputs: Vec<PathBuf>, batch: usize, send: &mpsc::SyncSender<Vec<Item>>) {
    let (mut items, mut samples) = (Vec::new(), 0);
    for path in inputs {
        let read = spec.read(&path, Some(batch)).map_err(|e| super::error_text(&e));
        let n = read.as_ref().map_or(0, Tensor::batch);
        if samples + n > batch && !items.is_empty() {
            if send.send(std::mem::take(&mut items)).is_err() {
                return;
            }
            samples = 0;
        }
        samples += n;
        items.push(Item { path, read });
        // Unreadable inputs count towards the batch too, so a batch's items stay few.
        if samples >= batch || items.len() >= batch {
            if send.send(std::mem::take(&mut items)).is_err() {
                return;
            }
            samples = 0;
        }
    }
    if !items.is_empty() {
        let _ = send.send(items);
    }
}

/// Runs the readable inputs of one batch through the model and prints every input's result, in
/// order. Returns how many were skipped.
fn run_batch(
    spec: &InputSpec,
    items: Vec<Item>,
    options: &Options,
    labels: &Labels,
    infer: &impl Fn(Tensor) -> anyhow::Result<Vec<Tensor>>,
    out: &mut Printer,
) -> anyhow::Result<usize> {
    // The inputs' samples move into the batch; each item keeps its count or its error.
    let mut parts = Vec::new();
    let mut names = Vec::new();
    let items: Vec<(PathBuf, Result<usize, String>)> = items
        .into_iter()
        .map(|Item { path, read }| {
            let read = read.map(|t| {
                names.extend(sample_names(&path, t.batch()));
                let n = t.batch();
                parts.push(t);
                n
            });
            (path, read)
        })
        .collect();
    let logits = if parts.is_empty() {
        None
    } else {
        let outputs = infer(Tensor::concat_batch(parts)?)?;
        let logits = outputs.into_iter().next().context("the model has no inference output")?;
        if logits.shape.len() != 2 {
            bail!(
                "--top needs logits of shape [N, classes], but model `{}` outputs {}",
                spec.model,
                Dims(&logits.shape)
            );
        }
        labels.check(logits.shape[1], &spec.model)?;
        if let Some(spool) = &mut out.logits {
            spool.add(&logits)?;
        }
        Some(logits)
    };
    let tops = logits.as_ref().map(|l| top::rank(l, &names, labels, options.top)).unwrap_or_default();
    let mut tops = tops.iter();
    let mut text = String::new();
    let mut skipped = 0;
    for (path, read) in &items {
        match read {
            Ok(n) => {
                for top in tops.by_ref().take(*n) {
                    text += &if options.csv { top::csv_rows(top) } else { top::jsonl(top)? };
                }
            }
            Err(error) => {
                skipped += 1;
                out.stderr(&format!("skipped: {error}"));
                if !options.csv {
                    text += &top::jsonl_error(&path.display().to_string(), error)?;
                }
            }
        }
    }
    out.stdout(&text)?;
    if let Some(bar) = out.progress {
        bar.inc(items.len() as u64);
    }
    Ok(skipped)
}

/// The logits of the batches so far, as little-endian f32 rows in an unnamed temporary file.
struct Spool {
    file: std::io::BufWriter<std::fs::File>,
    rows: usize,
    classes: usize,
}

impl Spool {
    fn add(&mut self, logits: &Tensor) -> anyhow::Result<()> {
        let (rows, classes) = (logits.shape[0], logits.shape[1]);
        if self.rows > 0 && classes != self.classes {
            bail!("the model gave {classes} logits per sample after {} before", self.classes);
        }
        let bytes: Vec<u8> = logits.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file.write_all(&bytes).context("cannot spool the logits")?;
        (self.rows, self.classes) = (self.rows + rows, classes);
        Ok(())
    }
}

/// Standard output and error around the progress bar, and the logits for --output.
struct Printer<'a> {
    logits: Option<Spool>,
    progress: Option<&'a indicatif::ProgressBar>,
    /// Standard output's reader has gone (a closed pipe): the rest of the output is dropped.
    closed: bool,
}

impl Printer<'_> {
    fn stdout(&mut self, text: &str) -> anyhow::Result<()> {
        if self.closed || text.is_empty() {
            return Ok(());
        }
        let write = || {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        let result = match self.progress {
            Some(bar) => bar.suspend(write),
            None => write(),
        };
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e).context("cannot write to standard output"),
            Ok(()) => Ok(()),
        }
    }

    fn stderr(&self, line: &str) {
        match self.progress {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
