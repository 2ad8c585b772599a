//! The 1000 ImageNet class names, in torchvision's order (`models/imagenet_classes.txt`, extracted from
//! `torchvision.models._meta._IMAGENET_CATEGORIES`), compiled into the binary.

use std::sync::OnceLock;

const TEXT: &str = include_str!("../../models/imagenet_classes.txt");

/// The class names, index = class id.
pub fn imagenet() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| TEXT.lines().collect())
}

/// The name of class `index` for a classifier with `classes` outputs: the ImageNet name when the
/// model has 1000 classes, else `class <index>`.
pub fn label(index: usize, classes: usize) -> String {
    match imagenet().get(index) {
        Some(name) if classes == imagenet().len() => (*name).to_string(),
        _ => format!("class {index}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn there_are_1000_names_in_torchvision_order() {
        let names = super::imagenet();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[281], "tabby");
        assert_eq!(names[999], "toilet tissue");
        assert!(names.iter().all(|n| !n.is_empty() && n.trim() == *n));
        assert_eq!(super::label(281, 1000), "tabby");
        assert_eq!(super::label(3, 10), "class 3");
    }
}
