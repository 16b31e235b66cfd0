// How a batch of images is packed for the model: channels first (PyTorch exports) or last
// (TensorFlow). A leaf: the engines and the packing both name it, and neither imports the other.
export type Layout = 'NCHW' | 'NHWC';
