"""nnU-Net trainers: skeleton-recall loss and MRI augmentation."""
