//! Helpers shared by the workspace integration tests.

use std::path::PathBuf;

/// The datasets folder (`KP_DATA_DIR` or `../shared/datasets` beside the checkout).
pub fn data_dir() -> PathBuf {
    kp_data::test_data_dir()
}

/// The IMM Face Database folder.
pub fn imm_dir() -> PathBuf {
    data_dir().join("imm_face_db")
}

/// The 300-W training crops XML.
pub fn ibug_crops_xml() -> PathBuf {
    data_dir().join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml")
}
