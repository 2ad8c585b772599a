//! Reads the main file and, transitively, every file it `use`s; collects the blocks and the network.

use crate::syntax::ast::{BlockDef, Item, NetworkDef};
use crate::syntax::{parser, Diagnostic, ErrorKind, FileId, SourceMap, Span};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything the elaborator needs: the sources, every block by name and the network.
pub struct Program {
    pub sources: SourceMap,
    pub blocks: HashMap<String, (FileId, BlockDef)>,
    pub network: (FileId, NetworkDef),
}

/// Loads `path` (whose text is `text` when given, else read from disk) with every `use`d file.
pub fn load(path: &Path, text: Option<String>) -> Result<Program, Diagnostic> {
    let mut loader = Loader {
        sources: SourceMap::new(),
        blocks: HashMap::new(),
        networks: Vec::new(),
        stack: Vec::new(),
        loaded: HashSet::new(),
    };
    let text = match text {
        Some(t) => t,
        None => read(path, None, &loader.sources)?,
    };
    loader.load_file(path.to_path_buf(), text)?;
    let Loader { sources, blocks, networks, .. } = loader;
    let mut networks = networks.into_iter();
    let network = match (networks.next(), networks.next()) {
        (Some(n), None) => n,
        (None, _) => {
            return Err(Diagnostic::new(
                ErrorKind::Structure,
                format!("{} defines no `network`", path.display()),
                None,
            )
            .with_note("a model file declares `network name(input: [c, h, w]) { ... }`"))
        }
        (Some(_), Some((file, second))) => {
            return Err(Diagnostic::new(
                ErrorKind::Structure,
                "a file may define only one network",
                Some(sources.locate(Span { file, ..second.name.span })),
            ))
        }
    };
    Ok(Program { sources, blocks, network })
}

fn read(path: &Path, site: Option<Span>, sources: &SourceMap) -> Result<String, Diagnostic> {
    let error = |e: &dyn std::fmt::Display| {
        Diagnostic::new(
            ErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
            site.map(|s| sources.locate(s)),
        )
    };
    let bytes = crate::files::read_capped(path, crate::files::MAX_SOURCE_BYTES).map_err(|e| error(&e))?;
    String::from_utf8(bytes).map_err(|_| error(&"stream did not contain valid UTF-8"))
}

struct Loader {
    sources: SourceMap,
    blocks: HashMap<String, (FileId, BlockDef)>,
    networks: Vec<(FileId, NetworkDef)>,
    /// Files being loaded, outermost first, for detecting `use` cycles.
    stack: Vec<PathBuf>,
    /// Every file loaded so far (canonical paths); a file used twice is loaded once.
    loaded: HashSet<PathBuf>,
}

impl Loader {
    fn load_file(&mut self, path: PathBuf, text: String) -> Result<(), Diagnostic> {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        self.loaded.insert(key.clone());
        self.stack.push(key);
        let file = self.sources.add(path.clone(), text);
        let module = parser::parse(&self.sources, file)?;
        let is_main = self.stack.len() == 1;
        for item in module.items {
            match item {
                Item::Use { path: used, span } => self.load_use(&path, &used, span)?,
                Item::Block(block) => {
                    if let Some((prev_file, prev)) = self.blocks.get(&block.name.name) {
                        let first = self.sources.locate(Span { file: *prev_file, ..prev.name.span });
                        return Err(Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!("block `{}` is defined twice", block.name.name),
                            Some(self.sources.locate(block.name.span)),
                        )
                        .with_note(format!("first defined at {first}")));
                    }
                    if super::builtins::is_builtin(&block.name.name) {
                        return Err(Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!(
                                "`{}` is a built-in op and cannot be redefined as a block",
                                block.name.name
                            ),
                            Some(self.sources.locate(block.name.span)),
                        ));
                    }
                    self.blocks.insert(block.name.name.clone(), (file, block));
                }
                Item::Network(net) => {
                    if !is_main {
                        return Err(Diagnostic::new(
                            ErrorKind::Structure,
                            "a file brought in with `use` may define blocks only, not a network",
                            Some(self.sources.locate(net.name.span)),
                        ));
                    }
                    self.networks.push((file, net));
                }
            }
        }
        self.stack.pop();
        Ok(())
    }

    fn load_use(&mut self, from: &Path, used: &str, span: Span) -> Result<(), Diagnostic> {
        let target = from.parent().unwrap_or(Path::new("")).join(used);
        let key = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
        if let Some(pos) = self.stack.iter().position(|p| *p == key) {
            let chain: Vec<String> = self.stack[pos..]
                .iter()
                .chain(std::iter::once(&key))
                .map(|p| {
                    p.file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
                })
                .collect();
            return Err(Diagnostic::new(
                ErrorKind::Recursion,
                format!("`use` cycle: {}", chain.join(" -> ")),
                Some(self.sources.locate(span)),
            ));
        }
        if self.loaded.contains(&key) {
            return Ok(());
        }
        let text = read(&target, Some(span), &self.sources)?;
        self.load_file(target, text)
    }
}
