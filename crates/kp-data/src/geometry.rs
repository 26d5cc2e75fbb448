//! Points and boxes in pixel coordinates.

use serde::{Deserialize, Serialize};

/// A 2-D point in pixel coordinates (0-based, pixel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal coordinate, pixels from the left edge.
    pub x: f32,
    /// Vertical coordinate, pixels from the top edge.
    pub y: f32,
}

impl Point {
    /// Makes a point.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    /// Euclidean distance to another point.
    pub fn distance(self, other: Point) -> f32 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }

    /// True when both coordinates are finite.
    pub fn is_finite(self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }
}

/// An axis-aligned box in pixel coordinates (dlib convention: `left`, `top`, `width`, `height`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width in pixels.
    pub width: f32,
    /// Height in pixels.
    pub height: f32,
}

impl BBox {
    /// Makes a box from its left, top, width and height.
    pub const fn new(left: f32, top: f32, width: f32, height: f32) -> Self {
        Self {
            left,
            top,
            width,
            height,
        }
    }

    /// `[left, top, width, height]`: the box as detections, JSON outputs and messages write it.
    pub const fn ltwh(&self) -> [f32; 4] {
        [self.left, self.top, self.width, self.height]
    }

    /// The centre of the box.
    pub fn center(&self) -> Point {
        Point::new(self.left + self.width / 2.0, self.top + self.height / 2.0)
    }

    /// The right edge (`left + width`).
    pub fn right(&self) -> f32 {
        self.left + self.width
    }

    /// The bottom edge (`top + height`).
    pub fn bottom(&self) -> f32 {
        self.top + self.height
    }

    /// The area where `self` and `other` overlap (0 when they do not).
    pub fn intersection_area(&self, other: &BBox) -> f32 {
        let w = (self.right().min(other.right()) - self.left.max(other.left)).max(0.0);
        let h = (self.bottom().min(other.bottom()) - self.top.max(other.top)).max(0.0);
        w * h
    }

    /// The tight box around a set of points, or `None` when there are none.
    pub fn around(points: &[Point]) -> Option<BBox> {
        let first = points.first()?;
        let (mut x0, mut y0, mut x1, mut y1) = (first.x, first.y, first.x, first.y);
        for p in points {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        Some(BBox::new(x0, y0, x1 - x0, y1 - y0))
    }
}
