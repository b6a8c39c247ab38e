// Misuse throws tapelm::Error naming the op and the shapes; never a crash.
#include "tests/test_helpers.h"

using namespace tapelm;

TEST(Errors, MatmulInnerDimensions) {
  EXPECT_ERROR_CONTAINS(matmul(zeros({4, 3}), zeros({5, 2})), "matmul: [4,3] @ [5,2]: inner dimensions 3 and 5 differ");
  EXPECT_ERROR_CONTAINS(matmul(zeros({3}), zeros({3, 2})), "matmul: [3] @ [3,2]");
  EXPECT_ERROR_CONTAINS(matmul(zeros({2, 2, 3}), zeros({3, 3, 2})), "matmul: shapes [2] and [3] cannot be broadcast");
  EXPECT_ERROR_CONTAINS(matmul(zeros({2, 3}), zeros({3, 2}, DType::f64)), "dtypes float32 and float64");
}

TEST(Errors, BroadcastMismatchNamesOpAndShapes) {
  EXPECT_ERROR_CONTAINS(add(zeros({2, 3}), zeros({4, 3})),
                        "add: shapes [2,3] and [4,3] cannot be broadcast (dimension 0: 2 vs 4)");
  EXPECT_ERROR_CONTAINS(mul(zeros({3}), zeros({4})), "mul: shapes [3] and [4]");
  EXPECT_ERROR_CONTAINS(where(from_bools({1, 0, 1}, {3}), zeros({2}), zeros({2})), "where: shapes [3] and [2]");
}

TEST(Errors, ShapeOps) {
  EXPECT_ERROR_CONTAINS(reshape(zeros({2, 3}), {4, -1}), "reshape: [2,3] -> [4,-1]");
  EXPECT_ERROR_CONTAINS(reshape(zeros({2, 3}), {5}), "reshape: [2,3] -> [5]");
  EXPECT_ERROR_CONTAINS(permute(zeros({2, 3}), {0, 0}), "permute: dimension 0 repeated");
  EXPECT_ERROR_CONTAINS(slice(zeros({2, 3}), 1, 2, 5), "slice: [2:5] out of range for axis 1");
  EXPECT_ERROR_CONTAINS(sum(zeros({2, 3}), {2}), "sum: axis 2 is out of range");
  EXPECT_ERROR_CONTAINS(concat({zeros({2, 3}), zeros({3, 3})}, 1), "concat: float32 [3,3]");
  EXPECT_ERROR_CONTAINS(split(zeros({2, 6}), {2, 2}, 1), "split: sizes sum to 4");
  EXPECT_ERROR_CONTAINS(expand(zeros({2, 3}), {3, 3}), "expand");
}

TEST(Errors, IndicesAndTargets) {
  EXPECT_ERROR_CONTAINS(embedding(zeros({5, 2}), from_ints({1, 7}, {2})),
                        "embedding: index 7 out of range for weight [5,2]");
  EXPECT_ERROR_CONTAINS(embedding(zeros({5, 2}), zeros({2})), "embedding: ids must be int32");
  EXPECT_ERROR_CONTAINS(cross_entropy(zeros({2, 4}), from_ints({1, 4}, {2})),
                        "cross_entropy: target 4 out of range for 4 classes");
  EXPECT_ERROR_CONTAINS(cross_entropy(zeros({2, 4}), from_ints({1, 2, 3}, {3})),
                        "cross_entropy: logits [2,4] need targets of shape [2], got [3]");
  EXPECT_ERROR_CONTAINS(masked_fill(zeros({2, 2}), zeros({2, 2}), 0), "masked_fill: the mask must be bool");
  EXPECT_ERROR_CONTAINS(exp(from_ints({1}, {1})), "exp: expects a float32 or float64 tensor, got int32");
  EXPECT_ERROR_CONTAINS(dropout(zeros({2}), 1.5, true, default_generator()), "dropout: probability 1.5");
}

TEST(Errors, BackwardMisuse) {
  EXPECT_ERROR_CONTAINS(backward(zeros({1})), "backward: the tensor [1] does not require grad");
  Tensor x = ones({2}).requires_grad_();
  Tensor y = mul_scalar(x, 2.0);
  EXPECT_ERROR_CONTAINS(backward(y, ones({3})), "backward: gradient of shape [3] for an output of shape [2]");
  clear_tape();
}
