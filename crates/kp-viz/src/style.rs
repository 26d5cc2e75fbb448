//! Colours shared by all figures (the seed study's conventions plus a categorical palette).

use image::Rgb;

/// Ground-truth keypoints: green (the seed's convention).
pub const GT_GREEN: Rgb<u8> = Rgb([0, 230, 0]);
/// Predicted keypoints: red (the seed's convention).
pub const PRED_RED: Rgb<u8> = Rgb([255, 32, 32]);
/// Training loss line: matplotlib's default blue (`tab:blue`).
pub const TRAIN_BLUE: Rgb<u8> = Rgb([31, 119, 180]);
/// Validation loss points: matplotlib's default orange (`tab:orange`).
pub const VAL_ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
/// White background.
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Black, for text and outlines.
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

/// Categorical palette for several series on one chart (matplotlib's `tab10`).
pub const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];

/// The `i`-th palette colour, cycling through [`PALETTE`].
pub fn palette(i: usize) -> Rgb<u8> {
    PALETTE[i % PALETTE.len()]
}

/// Converts an `image` colour into a plotters colour.
pub(crate) fn to_plotters(c: Rgb<u8>) -> plotters::style::RGBColor {
    plotters::style::RGBColor(c[0], c[1], c[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_cycles() {
        assert_eq!(palette(0), PALETTE[0]);
        assert_eq!(palette(10), PALETTE[0]);
        assert_eq!(palette(13), PALETTE[3]);
    }
}
